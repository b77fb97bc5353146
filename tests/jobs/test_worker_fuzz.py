"""G5 and G10 at the worker: a seeded mutation fuzz on its DEALER socket.

A fake dispatcher (a ROUTER the test holds) sends a real `Worker` mutations of
valid JOBS, LEASES, STOP, WHO, RESET and CANCEL frames, and frames nested 1,000 deep, declaring
2^31 items, of the wrong types or truncated. The worker must survive, count
every frame its validator refuses (and every JOBS item), and then run a valid
job and ack it. Each frame is also validated here, with the same validator, to
know how many the worker must count: a frame that raises anything but
`FrameError` here is one the worker would not count.
"""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import zmq
from peer_support import deep_frames, flood, huge_header_frames, mutator
from worker_support import acks_received, worker_on_router

from actorq import Retry, TaskRegistry
from actorq.jobs import wire
from actorq.jobs.task import encode_payload
from actorq.journal.protocol import LeasedJob
from actorq.testing import eventually
from actorq.transports.codec import FrameError, encode

registry = TaskRegistry()
ran: list[int] = []


@registry.task("wfuzz.ok")
async def ok(n: int) -> None:
    ran.append(n)


@registry.task("wfuzz.later")
async def later(seconds: float) -> None:
    raise Retry(seconds)


def _seeds() -> list[bytes]:
    payload = encode_payload([1], {})
    jobs = [LeasedJob(f"{n:032x}", "default", "wfuzz.none", payload, 1, 20, 1000 + n) for n in range(3)]
    valid = wire.Jobs.encode_leased(jobs, math.inf)
    return [
        valid, wire.Stop.FRAME, wire.Who.FRAME, wire.Reset.FRAME, wire.Leases(math.inf).encode(),
        wire.Leases(1e300).encode(), wire.Jobs.encode_leased(jobs, 0.0),  # lapsed: given back, not run
        *deep_frames(b"\xa4jobs"), *deep_frames(b"\xa3who"), *deep_frames(b"\xa6leases"),
        *huge_header_frames(b"\xa4jobs"), *huge_header_frames(b"\xa6leases"),
        encode(wire.JOBS, {"jobs": []}), encode(wire.JOBS, [[1, 2, 3]]), encode(wire.JOBS, [["x" * 300, 1]]),
        encode(wire.STOP, 1), encode(wire.RESET, [None]), encode(wire.HELLO, None),
        encode(wire.LEASES, math.nan), encode(wire.LEASES, -1.0), encode(wire.LEASES, 5), encode(wire.LEASES, None),
        valid[:-5],  # truncated
        wire.Cancel(("e" * 32,)).encode(),  # a job it does not hold: nothing to stop
        *deep_frames(b"\xa6cancel"), *huge_header_frames(b"\xa6cancel"),
        encode(wire.CANCEL, "x"), encode(wire.CANCEL, [1]), encode(wire.CANCEL, [""]),
        encode(wire.CANCEL, ["x" * 300]), encode(wire.CANCEL, None),
    ]


def _expected_drops(frame: bytes) -> int:
    """How many drops the worker must count for `frame`: what the validator refuses."""
    try:
        message = wire.from_dispatcher(frame, 1 << 20)
    except FrameError:
        return 1
    except Exception:  # noqa: BLE001 - an escape from the validator: the worker must still count it
        return 1
    return message.rejected if isinstance(message, wire.Jobs) else 0


def _frames(ident: bytes, rng: random.Random, count: int, expected: list[int]) -> Iterator[list[bytes]]:
    """`count` fuzz frames for the worker `ident` (no valid STOP: it would end the test's worker),
    then a sentinel of two parts; adds the drops each one must cost to ``expected[0]``."""
    seeds = _seeds()
    mutate = mutator(rng)
    sent = made = 0
    while sent < count:
        frame = seeds[made] if made < len(seeds) else mutate(rng.choice(seeds))
        made += 1
        try:
            if wire.from_dispatcher(frame, 1 << 20) == wire.Stop():
                continue
        except Exception:  # noqa: BLE001 - counted below
            pass
        expected[0] += _expected_drops(frame)
        sent += 1
        yield [ident, frame]
    yield [ident, b"end", b"of fuzz"]  # a part_count drop: frames arrive in order


async def _fuzz_the_worker(tmp_path: Path, rng: random.Random, count: int) -> None:
    loop = asyncio.get_running_loop()
    ran.clear()
    with worker_on_router(tmp_path, registry, owner="n/1/fuzz", concurrency=2, prefetch=2) as (worker, router):
        ident, hello = await loop.run_in_executor(None, router.recv_multipart)
        assert isinstance(wire.from_worker(hello, ident, 1 << 20), wire.Hello)
        rss = psutil.Process().memory_info().rss
        expected = [0]
        await flood(router, _frames(ident, rng, count, expected))
        await eventually(lambda: worker.malformed["part_count"] == 1, timeout=600, message="the fuzz was processed")
        grown = psutil.Process().memory_info().rss - rss
        counted = sum(worker.malformed.values()) - 1
        print(f"{count} frames to the worker: {counted} drops counted {dict(worker.malformed)}, "
              f"{expected[0]} expected; {worker.resets} resets; "
              f"RSS {rss / 2**20:.1f} MiB before, {grown / 2**20:+.1f} MiB after")
        assert counted == expected[0] + worker.malformed["over_credit"]
        assert worker.lapsed >= 3, "the jobs past their lease deadline were given back, not run"
        assert not worker.stopping and grown < 50 * 2**20

        # the worker still runs valid jobs and acks them (what the fuzz started is answered too),
        # a retry's delay among them
        await eventually(lambda: worker.running == 0 and not worker.backlog, timeout=30, message="fuzz jobs done")
        await loop.run_in_executor(None, acks_received, router, 10**9, 200)  # read what the fuzz made it send
        job = LeasedJob("f" * 32, "default", "wfuzz.ok", encode_payload([7], {}), 1, 20, 4242)
        later = LeasedJob("e" * 32, "default", "wfuzz.later", encode_payload([30], {}), 1, 20, 4243)
        router.send_multipart([ident, wire.Jobs.encode_leased([job, later], math.inf)])
        acks = await loop.run_in_executor(None, acks_received, router, 2)
        assert ran == [7]
        assert [a.succeeded for a in acks if a.succeeded] == [[(job.id, 4242)]]
        assert [(i.job_id, i.end, i.delay) for a in acks for i in a.ended] == [(later.id, "raised", 30.0)]


async def test_g5_seeded_mutation_fuzz_at_the_worker(tmp_path: Path, rng: random.Random) -> None:
    await _fuzz_the_worker(tmp_path, rng, 3000)


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_g5_chaos_10e5_mutated_frames_at_the_worker(tmp_path: Path, rng: random.Random) -> None:
    await _fuzz_the_worker(tmp_path, rng, 100_000)
