"""The node file: how processes on the machine find the node that serves a journal.

A node that admits no second node on its journal (SQLite: one node per file)
writes a small JSON file beside it, ``<journal's real path>.node``, mode 0600,
and removes it when it stops::

    {"pid": 4242, "name": "node-a",
     "control": "ipc:///tmp/actorq-x1y2/control",       actorq tree (actorq.node.control)
     "producers": "ipc:///tmp/actorq-x1y2/producers",   Client enqueues (actorq.jobs.producers)
     "max_payload": 16711680}                           the largest job arguments it accepts

The file is named from the journal's real path, as the node lock is, so a
symlink or ``a/../journal.db`` find the same node. A file whose pid is gone
(a node killed with SIGKILL) is read as "no node".

A node given a fixed producer endpoint (``[producers] endpoint``) is found
through that address instead, on any journal: `listener_pid` names the
process that listens there, so that a client can tell when it is gone.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any, Callable

import psutil

__all__ = ["NodeNotRunning", "listener_pid", "node_file_beside", "read_node_file", "write_node_file"]

SUFFIX = ".node"


class NodeNotRunning(Exception):
    """No live node answers for this journal, or what answered is no usable reply.

    The message names the node file or the control endpoint, and what went wrong.
    """


def node_file_beside(journal_path: str | os.PathLike[str]) -> Path:
    """The node file of the SQLite journal at `journal_path`, named from its real path."""
    path = Path(os.path.realpath(journal_path))
    return path.with_name(path.name + SUFFIX)


def write_node_file(path: Path, info: dict[str, Any]) -> None:
    """Write the node file atomically with mode 0600."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fp:
        json.dump(info, fp)
    os.replace(tmp, path)


def read_node_file(path: Path) -> dict[str, Any]:
    """Read a node file.

    Raises:
        NodeNotRunning: it is missing, unreadable, not a JSON object, or its process is gone.
    """
    try:
        info: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise NodeNotRunning(f"no node is running on this journal ({path} does not exist)") from None
    except (OSError, ValueError) as exc:
        raise NodeNotRunning(f"cannot read {path}: {exc}") from None
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not alive(pid):
        raise NodeNotRunning(f"the node that wrote {path} (pid {pid}) is not running")
    return info


_NOBODY_THERE = (errno.ENOENT, errno.ECONNREFUSED)
_ANY_ADDRESS = ("127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1")  # a listener that 127.0.0.1:PORT reaches


def listener_pid(endpoint: str) -> int | None:
    """The pid of the process listening at `endpoint`, or None when nothing listens there.

    ``ipc://``: a connection to the socket file, closed before a byte is sent; its peer
    credentials (``SO_PEERCRED``) name the process that listens. ``tcp://`` (loopback):
    the machine's listening sockets on that port (psutil).

    Raises:
        NodeNotRunning: something is there, but not whose it is (a socket file this user may
            not connect to; a tcp listener of another user's process; no answer within 1 s).
    """
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        peer_credentials = getattr(socket, "SO_PEERCRED", None)
        if peer_credentials is None:  # not Linux: look for the listening socket file
            return _listening("unix", lambda address: address == path, endpoint)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(path)
            except OSError as exc:
                if exc.errno in _NOBODY_THERE:
                    return None
                raise NodeNotRunning(f"cannot tell who listens at {endpoint}: {exc.strerror or exc}") from None
            pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, peer_credentials,
                                                                  struct.calcsize("3i")))
        return pid or None
    port = int(endpoint.rpartition(":")[2])
    return _listening("tcp", lambda address: bool(address) and address[1] == port and address[0] in _ANY_ADDRESS,
                      endpoint)


def _listening(kind: str, matches: Callable[[Any], bool], endpoint: str) -> int | None:
    for conn in psutil.net_connections(kind=kind):
        if (conn.status == psutil.CONN_LISTEN or kind == "unix") and matches(conn.laddr):
            if conn.pid is None:
                raise NodeNotRunning(f"a process of another user listens at {endpoint}")
            return conn.pid
    return None


def alive(pid: int) -> bool:
    """Whether process `pid` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
