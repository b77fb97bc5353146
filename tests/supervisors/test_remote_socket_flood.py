"""Floods on remote actors' sockets: memory stays bounded (ACCEPTANCE G10, H12).

* The hub (in the test's process): a flooder in its own process (so its buffers
  are not ours) sends ≥10⁴ small frames nested 1,000 deep and replies with
  1 MiB values that nobody waits for, then frames over `MAX_FRAME`, which cut it
  off inside libzmq. The test process's RSS is sampled through the flood.
* A child: the hub sends it ≥10⁴ small bad frames, 10⁴ small tells and tells of
  1 MiB; the child's RSS (psutil on its pid) is sampled through the flood.

Afterwards the child is alive with the same pid and answers an ask, and no
traceback or error was logged. ``-m chaos`` sends 10⁵ frames per socket and
prints the figures.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actorq import ActorSystem
from actorq.supervisors.remote import AREPLY, ATELL, MAX_FRAME
from actorq.transports.codec import encode

from test_remote_socket import _problems, _sink, send_to_child
from test_remote_socket import sink_module as sink_module  # the fixture

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))
from socket_support import MB, RSS_GROWTH_BOUND, RssSampler, nested  # noqa: E402


FLOODER = r'''
import sys, zmq
endpoint, small, large, oversized, max_frame = sys.argv[1], *map(int, sys.argv[2:6])
frames = [bytes.fromhex(h) for h in sys.stdin.read().split()]
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 10_000)  # deliver everything before exiting
sock.setsockopt(zmq.SNDHWM, 64)  # the flooder holds little itself
sock.setsockopt(zmq.RECONNECT_IVL, 10)  # cut off for an oversized frame: come back soon
sock.connect(endpoint)
small_frames, big, too_big = frames[:-1], frames[-1], b"\x00" * (max_frame + 1)
for i in range(small):
    sock.send(small_frames[i % len(small_frames)])
for i in range(large):
    sock.send(big)
for i in range(oversized):
    sock.send(too_big)
for i in range(small // 10):  # and small ones again, after the cuts
    sock.send(small_frames[i % len(small_frames)])
sock.close()
ctx.term()
'''

SMALL_TO_HUB = [
    b"\x93" + nested(1000) + b"\xa6areply\xc0",  # version nested 1,000 deep
    b"\x93\x01" + nested(1000) + b"\xc0",  # kind nested 1,000 deep
    encode(AREPLY, [2**40, True, None])[:-1] + nested(1000),  # a reply value nested 1,000 deep
    b"\x93\x01\xa6areply\xdd\x80\x00\x00\x00",  # declares 2^31 items
]


async def run_hub_flood(sink_module: str, small: int, large: int, oversized: int,
                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with ActorSystem() as system:
        ref = await _sink(system, sink_module, warm_up=20)
        pid = ref.pid
        hub = ref._hub
        frames = [*SMALL_TO_HUB, encode(AREPLY, [2**40, True, b"\x00" * MB])]
        sampler = RssSampler(os.getpid())
        flooder = subprocess.Popen([sys.executable, "-c", FLOODER, hub.endpoint, str(small), str(large),
                                    str(oversized), str(MAX_FRAME)], stdin=subprocess.PIPE, text=True)
        flooder.stdin.write(" ".join(f.hex() for f in frames))
        flooder.stdin.close()
        while flooder.poll() is None:  # the hub serves on this loop meanwhile
            assert await ref.ask("pid", timeout=30) == pid
        assert flooder.returncode == 0
        assert await ref.ask("pid", timeout=30) == pid and ref.is_alive  # the next ask is answered
        baseline, peak, after = sampler.stop()
        print(f"hub flood: {small + small // 10} small, {large} of 1 MiB, {oversized} oversized frames; "
              f"hub dropped {hub.dropped.total} {dict(hub.dropped.by_reason)}; parent RSS baseline "
              f"{baseline / MB:.1f} MB, peak {peak / MB:.1f} MB, after {after / MB:.1f} MB")
        # every frame before the first oversized one arrives (and is dropped); that one cuts the
        # flooder off, and libzmq may lose what followed it on that connection
        assert hub.dropped.total >= small + large
        assert peak - baseline < RSS_GROWTH_BOUND
        assert after - baseline < RSS_GROWTH_BOUND
    assert _problems(caplog) == []


async def run_child_flood(sink_module: str, small: int, tells: int, large: int,
                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with ActorSystem() as system:
        ref = await _sink(system, sink_module, warm_up=20)
        pid = ref.pid
        sampler = RssSampler(pid)
        bad = [[b"\x93" + nested(1000) + b"\xa5atell\xc0"], [b"\x93\x01" + nested(1000) + b"\xc0"],
               [encode(ATELL, None)[:-1] + nested(1000)], [b"\x93\x01\xa5atell\xdd\x80\x00\x00\x00"]]
        await send_to_child(ref, [bad[i % len(bad)] for i in range(small)], chunk=500)
        await send_to_child(ref, [[encode(ATELL, i)] for i in range(tells)], chunk=500)
        await send_to_child(ref, [[encode(ATELL, b"\x00" * MB)]] * large, chunk=16)
        dropped = await ref.dropped()
        delivered = await ref.ask("count")
        baseline, peak, after = sampler.stop()
        print(f"child flood: {small} bad, {tells} small tells, {large} tells of 1 MiB; child dropped "
              f"{dropped}; child RSS baseline {baseline / MB:.1f} MB, peak {peak / MB:.1f} MB, "
              f"after {after / MB:.1f} MB")
        assert sum(dropped.values()) == small and delivered == tells + large
        assert ref.is_alive and ref.pid == pid
        assert peak - baseline < RSS_GROWTH_BOUND
        assert after - baseline < RSS_GROWTH_BOUND
    assert _problems(caplog) == []


async def test_g10_h12_hub_flood_keeps_the_parent_memory_bounded(sink_module, caplog) -> None:
    await run_hub_flood(sink_module, small=10_000, large=200, oversized=5, caplog=caplog)


async def test_g10_h12_child_flood_keeps_the_child_memory_bounded(sink_module, caplog) -> None:
    await run_child_flood(sink_module, small=10_000, tells=10_000, large=200, caplog=caplog)


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_chaos_hub_flood_of_100k_frames(sink_module, caplog) -> None:
    await run_hub_flood(sink_module, small=100_000, large=1_000, oversized=20, caplog=caplog)


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_chaos_child_flood_of_100k_frames(sink_module, caplog) -> None:
    await run_child_flood(sink_module, small=50_000, tells=50_000, large=1_000, caplog=caplog)
