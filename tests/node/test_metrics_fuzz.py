"""Hostile bytes at a real node's metrics port: garbage, huge heads, slow heads, many connections.

After each attack the node still answers ``GET /metrics`` correctly, the connections the
process holds on the port stay within `metrics.MAX_CONNECTIONS`, and each drop is counted
by reason in ``actorq_malformed_frames{socket="metrics"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actorq import Node
from actorq.node import metrics
from actorq.node.metrics import MetricsConfig
from actorq.testing import eventually

TASKS = """
@registry.task("f.ok")
async def ok():
    return None
"""

VALID = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
CAP = 6  # metrics.MAX_CONNECTIONS in these tests


def _exchange(address: tuple[str, int], data: bytes, *, half_close: bool = True) -> bytes:
    """Send `data` on a new connection, then read everything the server says until it closes."""
    with socket.create_connection(address, timeout=20) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server closed first (e.g. a head over the cap): what it said is read below
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def _closing(request: bytes) -> bytes:
    """`request` asking the server to close the connection after its answer."""
    return request.replace(b"Host: ", b"Connection: close\r\nHost: ", 1)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def _held(port: int) -> int:
    """Connections this process holds on the metrics port's server side (accepted sockets)."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.raddr and c.status == psutil.CONN_ESTABLISHED)


def _scrape(address: tuple[str, int]) -> dict[str, list]:
    reply = _exchange(address, _closing(VALID), half_close=False)
    assert _status(reply) == 200, reply[:200]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: text/plain; version=0.0.4" in head.lower()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(body.decode())}


@pytest.fixture
def bounds(monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS", CAP)
    monkeypatch.setattr(metrics, "IDLE_TIMEOUT", 0.5)  # a slow head is dropped fast; no test waits on it
    monkeypatch.setattr(metrics, "MAX_HEAD", 4096)


async def test_metrics_socket_fuzz_drops_counts_and_keeps_serving(topology, rng, bounds, caplog) -> None:
    topo = topology(TASKS, processes=1)
    config = dataclasses.replace(topo.config, metrics=MetricsConfig(bind="127.0.0.1:0"))
    run = asyncio.get_running_loop().run_in_executor
    async with Node(config) as node:
        server = node.metrics
        assert server is not None
        address = server.address
        port = address[1]
        assert "actorq_jobs" in await run(None, _scrape, address)

        # 1. only GET/HEAD /metrics: other paths 404, other methods 405 (the body is never read)
        for request, status in (
                (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                (b"GET /metrics/../admin HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                (b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000, 405),
                (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
                (b"GET /metrics HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", 200)):
            reply = await run(None, lambda: _exchange(address, _closing(request), half_close=False))
            assert _status(reply) == status, (request[:60], reply[:200])
        head = await run(None, lambda: _exchange(address, _closing(VALID.replace(b"GET", b"HEAD")), half_close=False))
        assert _status(head) == 200 and head.endswith(b"\r\n\r\n")  # no body

        # 2. a head over the cap (one huge header, or very many): 400, closed, nothing kept
        huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        many = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 5_000 + b"\r\n"
        for request in (huge, many):
            assert _status(await run(None, lambda: _exchange(address, request, half_close=False))) in (400, 0)

        # 3. garbage and a seeded mutation fuzz of a valid request: an answer or a close, never a hang
        blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))) for _ in range(40)]
        blobs += [b"\x00" * 3000, b"\r\n" * 2000, b"GET " + b"/" * 5000 + b" HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00"]
        for _ in range(120):
            frame = bytearray(VALID)
            for _ in range(rng.randrange(1, 6)):
                op = rng.randrange(3)
                at = rng.randrange(len(frame))
                if op == 0:
                    frame[at] = rng.randrange(256)
                elif op == 1:
                    del frame[at:at + rng.randrange(1, 8)]
                else:
                    frame[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
            blobs.append(bytes(frame))
        statuses = await run(None, lambda: [_status(_exchange(address, blob)) for blob in blobs])
        assert set(statuses) <= {0, 200, 400, 404, 405}, set(statuses)
        assert server.dropped()["bad_request"] >= 40  # random bytes are never a request

        # 4. many connections, then a slow head on each: at most CAP held, the rest closed at once;
        #    the held ones are dropped at the deadline however they dribble
        def flood() -> list[socket.socket]:
            socks = []
            for _ in range(60):
                sock = socket.create_connection(address, timeout=20)
                socks.append(sock)
            for sock in socks:
                try:
                    sock.sendall(b"GET /met")
                except OSError:
                    pass
            return socks

        socks = await run(None, flood)
        try:
            await eventually(lambda: server.dropped().get("connections", 0) >= 60 - CAP, timeout=30,
                             message="connections over the cap closed")
            assert server.connections <= CAP
            # the sockets of those closed are released as the server's loop turns
            await eventually(lambda: _held(port) <= CAP, timeout=30, message=f"at most {CAP} sockets held")
            await eventually(lambda: server.connections == 0, timeout=30, message="slow heads dropped")
            assert server.dropped()["slow_request"] >= 1
            assert await run(None, _held, port) == 0
        finally:
            for sock in socks:
                sock.close()

        # 5. afterwards: /metrics answers, with every drop counted by reason
        families = await run(None, _scrape, address)
        dropped = {labels["reason"]: v for name, labels, v in families["actorq_malformed_frames"]
                   if labels["socket"] == "metrics"}
        assert dropped == server.dropped()
        assert {"bad_request", "connections", "slow_request"} <= set(dropped)
        assert "actorq_jobs" in families and "actorq_job_run_seconds" in families
        await eventually(lambda: server.connections == 0, timeout=30, message="the scrape's connection closed")
        print(f"metrics fuzz: {len(blobs)} blobs, drops {dict(dropped)}")
    # counted, not logged one by one: a flood does not fill the log
    assert [r.getMessage() for r in caplog.records if r.name.startswith("uvicorn")] == []


async def test_idle_keep_alive_connections_are_closed_and_not_counted_as_drops(topology, bounds) -> None:
    topo = topology(TASKS, processes=1)
    config = dataclasses.replace(topo.config, metrics=MetricsConfig(bind="127.0.0.1:0"))
    async with Node(config) as node:
        server = node.metrics
        assert server is not None

        def keep_alive() -> tuple[bytes, bytes]:
            with socket.create_connection(server.address, timeout=20) as sock:
                sock.sendall(VALID)
                reply = b""
                while b"actorq_jobs" not in reply:  # the whole answer is short; it arrives
                    reply += sock.recv(65536)
                while sock.recv(65536):  # then the server closes the idle connection
                    pass
                return reply

        reply = await asyncio.get_running_loop().run_in_executor(None, keep_alive)
        assert _status(reply) == 200
        assert server.dropped() == {}  # an idle keep-alive connection closed is no drop
