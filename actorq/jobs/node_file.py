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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["NodeNotRunning", "node_file_beside", "read_node_file", "write_node_file"]

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


def alive(pid: int) -> bool:
    """Whether process `pid` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
