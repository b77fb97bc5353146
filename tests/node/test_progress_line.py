"""The progress line of `actorq run`: circuit breakers not closed show on it, read at most every
`BREAKERS_EVERY` s (an injected clock), and not at all when no task of the node declares one."""

from __future__ import annotations

import operator
import re

from actorq import Job, Node
from actorq.node import cli
from actorq.node.cli import _ProgressPrinter
from actorq.testing import eventually

BREAKER = """
import os
from actorq import CircuitBreaker, RetryPolicy

@registry.task("p.partner", queue="partner", max_attempts=50, retry=RetryPolicy.fixed(0.01),
               circuit_breaker=CircuitBreaker(failures=2, window=60, cool_down=1.0, probes=1))
def partner(flag):
    if os.path.exists(flag):
        raise OSError("partner down")


@registry.task("p.plain")
def plain():
    return None
"""

PLAIN = """
@registry.task("p.plain")
def plain():
    return None
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker_reads(node: Node) -> list[int]:
    """Count the breakers reads that reach the journal writer."""
    writer = node.runtime._writer
    reads = [0]
    call = writer.call

    async def counting(kind, arg=None):  # noqa: ANN001, ANN202
        if isinstance(arg, operator.methodcaller) and "breakers" in repr(arg):
            reads[0] += 1
        return await call(kind, arg)

    writer.call = counting
    return reads


async def _read(printer: _ProgressPrinter) -> bool:
    task = printer.read_breakers()
    if task is None:
        return False
    await task
    return True


async def test_open_breakers_show_on_the_progress_line_read_at_most_every_few_seconds(topology, tmp_path,
                                                                                       capsys) -> None:
    flag = tmp_path / "down"
    flag.write_text("down")
    topo = topology(BREAKER, processes=1, concurrency=2, queues=("partner", "default"))
    async with Node(topo.config) as node:
        reads = _breaker_reads(node)
        clock = Clock()
        printer = _ProgressPrinter(node, quiet=False, clock=clock)
        assert await _read(printer) and reads == [1]
        printer.tick()
        assert "breakers" not in capsys.readouterr().err  # all closed: nothing said

        await node.queue().enqueue_many([Job("p.partner", [str(flag)]) for _ in range(4)])

        async def opened() -> bool:
            return [b.state for b in await node.breakers()] == ["open"]

        await eventually(opened, timeout=30, message="the breaker opened")
        reads[0] = 0

        assert not await _read(printer)  # the cached counts: no read within BREAKERS_EVERY s
        clock.now += cli.BREAKERS_EVERY - 0.01
        assert not await _read(printer) and reads == [0]
        clock.now += 0.01
        assert await _read(printer) and reads == [1]
        printer.tick()
        line = capsys.readouterr().err
        # open, or half-open if its cool-down passed meanwhile (a probe under way)
        assert re.search(r"  breakers (open|half-open): 1( |$)", line), line

        flag.unlink()  # the partner is back: a probe succeeds, the breaker closes
        await node.wait_idle(timeout=60)
        clock.now += cli.BREAKERS_EVERY
        assert await _read(printer) and reads == [2]
        printer.tick()
        assert "breakers" not in capsys.readouterr().err


async def test_a_node_without_breakers_never_reads_them(topology, capsys) -> None:
    topo = topology(PLAIN, processes=1)
    async with Node(topo.config) as node:
        reads = _breaker_reads(node)
        clock = Clock()
        printer = _ProgressPrinter(node, quiet=False, clock=clock)
        for _ in range(3):
            assert await _read(printer)
            clock.now += cli.BREAKERS_EVERY
        assert reads == [0] and await node.breakers() == []
        printer.tick()
        assert "breakers" not in capsys.readouterr().err
