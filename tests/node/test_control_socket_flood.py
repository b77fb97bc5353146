"""Floods on the node's control socket: memory stays bounded (ACCEPTANCE G10, H12, H13).

The node runs as ``actorq run`` in its own process, so its RSS is its own:
psutil samples it through the flood (the peak) and after it. The flood is,
from many peers at once: frames whose version, kind or body is nested 1,000
deep (G10), tree requests with ignored bodies just under the request size
limit and of 1 MB (H13; before the fix 100 of these took a node from 36 MB to
875 MB), and pipelined valid requests that are never read (H12); each of TREE
and STATUS. Afterwards the node answers ``tree`` with the same restart counts
and ``status`` as usual, and its log holds no traceback and about one drop line
a second.

The default run sends about 2.5·10⁴ frames; ``-m chaos`` sends 10⁵ small
frames and prints the figures.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from actorq.node.control import STATUS, TREE
from actorq.transports.codec import encode

from node_process import NodeProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))
from socket_support import (  # noqa: E402
    MB, RSS_GROWTH_BOUND, RssSampler, ask_node_status, ask_tree, nested, pk, restarts, wait_for_node,
)

TASKS = """
@registry.task("ctl.noop")
async def noop():
    pass
"""

PEERS = 8


SMALL = [  # G10: about 1 KB each
    b"\x93" + nested(1000) + pk(TREE) + b"\xc0",
    b"\x93\x01" + nested(1000) + b"\xc0",
    b"\x93\x01" + pk(TREE) + nested(1000),
    b"\x93\x01" + pk(TREE) + b"\xdd\x80\x00\x00\x00",  # declares 2^31 items
    b"\x93" + nested(1000) + pk(STATUS) + b"\xc0",
    b"\x93\x01" + pk(STATUS) + nested(1000),
    b"\x93\x01" + pk(STATUS) + b"\xdf\x80\x00\x00\x00",  # a map declaring 2^31 pairs
]
NEAR_LIMIT = [encode(TREE, b"\x00" * 3900), encode(STATUS, b"\x00" * 3900)]  # just under the request size limit
ONE_MB = [encode(TREE, [1] * 1_000_000), encode(STATUS, {str(i): i for i in range(100_000)})]  # H13: 1 MB bodies


def _send(endpoint: str, frames: list[bytes], repeat: int) -> int:
    """Send `frames` cyclically `repeat` times from one DEALER; return how many went out."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2_000)
    sock.setsockopt(zmq.RECONNECT_IVL, 10)  # a peer cut off for an oversized frame comes back soon
    sock.connect(endpoint)
    sent = 0
    try:
        for i in range(repeat):
            try:
                sock.send(frames[i % len(frames)])
                sent += 1
            except zmq.Again:  # the node holds no more for us right now: fine, that is the bound
                pass
    finally:
        sock.close()
    return sent


def _flood(endpoint: str, plan: list[tuple[list[bytes], int, int]]) -> int:
    """Run every ``(frames, repeat, peers)`` of `plan` with `peers` DEALERs at once; return frames sent."""
    total = 0
    lock = threading.Lock()

    def one(frames: list[bytes], repeat: int) -> None:
        nonlocal total
        sent = _send(endpoint, frames, repeat)
        with lock:
            total += sent

    for frames, repeat, peers in plan:
        threads = [threading.Thread(target=one, args=(frames, repeat)) for _ in range(peers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return total


@dataclass
class FloodResult:
    sent: int
    baseline: int
    peak: int
    after: int
    restarts_before: dict[str, int]
    restarts_after: dict[str, int]
    seconds: float


def run_flood(topology: Any, small_per_peer: int, near_limit_per_peer: int, one_mb_peers: int,
              pipelined: int) -> FloodResult:
    topo = topology(TASKS, processes=1)
    node = NodeProcess(topo, 1)
    try:
        endpoint = wait_for_node(Path(topo.config.node_file), 1, node.output)
        for _ in range(20):  # warm up: the first answers allocate what every later one reuses
            tree = ask_tree(endpoint)
        before = restarts(tree)
        sampler = RssSampler(node.pid)
        started = time.monotonic()
        sent = _flood(endpoint, [
            (SMALL, small_per_peer, PEERS),
            (NEAR_LIMIT, near_limit_per_peer, PEERS),
            (ONE_MB, 2, one_mb_peers // 2),  # many at once, each from its own peer
            ([encode(TREE, None), encode(STATUS, None)], pipelined, 2),  # valid requests whose replies are never read
        ])
        after_tree = ask_tree(endpoint)  # the next valid requests are answered
        status = ask_node_status(endpoint)
        assert status["pid"] == node.pid and status["workers"]["restarts"] == 0, status
        seconds = time.monotonic() - started
        baseline, peak, after = sampler.stop()
        result = FloodResult(sent, baseline, peak, after, before, restarts(after_tree), seconds)
        print(f"control flood: {sent} frames in {seconds:.1f} s; node RSS baseline {baseline / MB:.1f} MB, "
              f"peak {peak / MB:.1f} MB, after {after / MB:.1f} MB; restarts before {sum(before.values())}, "
              f"after {sum(result.restarts_after.values())}")
    finally:
        node.proc.terminate()
    assert node.proc.wait(timeout=60) == 0, node.output()[-2000:]
    log = node.output()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    drop_lines = log.count("dropped a frame")
    print(f"control flood: {drop_lines} drop lines in the node's log")
    assert drop_lines <= result.seconds + 2, drop_lines
    return result


def test_g10_h12_h13_control_socket_flood_keeps_the_node_memory_bounded(topology) -> None:
    result = run_flood(topology, small_per_peer=2_000, near_limit_per_peer=500, one_mb_peers=100, pipelined=2_000)
    assert result.restarts_after == result.restarts_before
    assert result.peak - result.baseline < RSS_GROWTH_BOUND, "RSS grew during the flood"
    assert result.after - result.baseline < RSS_GROWTH_BOUND, "RSS did not come back near its baseline"


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_chaos_control_socket_flood_of_100k_frames(topology) -> None:
    result = run_flood(topology, small_per_peer=12_500, near_limit_per_peer=2_500, one_mb_peers=200,
                       pipelined=10_000)
    assert result.restarts_after == result.restarts_before
    assert result.peak - result.baseline < RSS_GROWTH_BOUND
    assert result.after - result.baseline < RSS_GROWTH_BOUND
