"""What a running node listens on (ACCEPTANCE H1, and G4 on the dispatcher's tcp endpoint).

A real ``actorq run`` from the ``topology`` fixture, in its own process; psutil
lists the inet sockets of the node and of its worker processes.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import sys
from pathlib import Path

import psutil

from actorq.node.control import TREE, query

from node_process import NodeProcess

sys.path.insert(0, str(Path(__file__).resolve().parent / "transports"))
from socket_support import processes, wait_for_node  # noqa: E402

TASKS = """
@registry.task("listen.noop")
async def noop():
    pass
"""


def _listeners(pid: int) -> list[tuple[str, int, str]]:
    """``(address, port, type)`` of every listening TCP socket and bound UDP socket of `pid` and its children."""
    found = []
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        for conn in process.net_connections(kind="inet"):
            if conn.type == socket.SOCK_STREAM and conn.status != psutil.CONN_LISTEN:
                continue
            found.append((conn.laddr.ip, conn.laddr.port, "tcp" if conn.type == socket.SOCK_STREAM else "udp"))
    return found


def _stop(node: NodeProcess) -> None:
    node.proc.terminate()
    assert node.proc.wait(timeout=60) == 0, node.output()[-2000:]


def test_h1_a_default_node_has_no_inet_listener(topology) -> None:
    topo = topology(TASKS, processes=2)
    node = NodeProcess(topo, 1)
    try:
        endpoint = wait_for_node(Path(topo.config.node_file), 2, node.output)
        assert endpoint.startswith("ipc://"), endpoint
        assert _listeners(node.pid) == []  # the dispatcher and control sockets are ipc:// only
    finally:
        _stop(node)


def test_h1_g4_a_tcp_endpoint_listens_on_loopback_only_and_survives_garbage(topology, rng: random.Random) -> None:
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    topo = topology(TASKS, processes=1, endpoint=f"tcp://127.0.0.1:{port}")
    node = NodeProcess(topo, 1)
    try:
        control = wait_for_node(Path(topo.config.node_file), 1, node.output)
        listeners = _listeners(node.pid)
        assert listeners == [("127.0.0.1", port, "tcp")], listeners
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _, _ in listeners)

        # G4: random bytes into the dispatcher's port, as `nc` would pipe them
        pids = [p.pid for p in psutil.Process(node.pid).children()]
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                try:
                    conn.sendall(rng.randbytes(rng.randint(1, 4096)))
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(2)
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass  # reset by the node: the handshake failed
        # the node still serves: its workers are the same and it answers
        assert processes(query(control, TREE, None, timeout=10.0)) == 1
        assert [p.pid for p in psutil.Process(node.pid).children()] == pids
    finally:
        _stop(node)
    log = node.output()
    print("G4 at the dispatcher:", [line for line in log.splitlines() if "dropped" in line][-1:])
    assert "Traceback" not in log, log[-3000:]

