"""The supervisor's operation queue: mailbox order per child, no head-of-line blocking.

What lets A25 hold (a child that ignores its stop delays only operations on
that child) while keeping OTP's serialisation: operations on one child run in
arrival order, an all-children operation waits for everything before it and
holds back everything after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from supkit import eventually

from actorq import ActorStopped
from actorq.supervisors._ops import ALL, OpQueue
from actorq.supervisors.errors import NotFound

pytestmark = pytest.mark.timeout(30)


class Script:
    """Operations that log their start and wait for the test to release them."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def op(self, name: str) -> Any:
        gate = self.gates[name] = asyncio.Event()

        async def run() -> str:
            self.log.append(name)
            await gate.wait()
            return name

        return run


async def test_ops_on_different_children_run_concurrently_same_child_in_order() -> None:
    script = Script()
    queue = OpQueue(on_bug=lambda exc: None)
    queue.submit(frozenset({"a"}), script.op("a1"))
    queue.submit(frozenset({"b"}), script.op("b1"))
    queue.submit(frozenset({"a"}), script.op("a2"))
    await eventually(lambda: script.log == ["a1", "b1"], "a1 and b1 to run together")
    script.gates["b1"].set()
    await asyncio.sleep(0.01)
    assert script.log == ["a1", "b1"]  # a2 waits for a1, whatever b does
    script.gates["a1"].set()
    await eventually(lambda: script.log == ["a1", "b1", "a2"], "a2 after a1")
    script.gates["a2"].set()
    await queue.drain()


async def test_an_all_children_op_waits_for_earlier_ops_and_holds_back_later_ones() -> None:
    script = Script()
    queue = OpQueue(on_bug=lambda exc: None)
    queue.submit(frozenset({"a"}), script.op("a1"))
    queue.submit(ALL, script.op("group"))
    queue.submit(frozenset({"b"}), script.op("b1"))  # touches another child, still waits
    await eventually(lambda: script.log == ["a1"], "a1 to start")
    await asyncio.sleep(0.01)
    assert script.log == ["a1"]
    script.gates["a1"].set()
    await eventually(lambda: script.log == ["a1", "group"], "the group op after a1")
    script.gates["group"].set()
    await eventually(lambda: script.log == ["a1", "group", "b1"], "b1 after the group op")
    script.gates["b1"].set()
    await queue.drain()


async def test_replies_errors_and_close() -> None:
    bugs: list[BaseException] = []
    queue = OpQueue(on_bug=bugs.append)
    loop = asyncio.get_running_loop()

    async def ok() -> int:
        return 1

    async def expected() -> None:
        raise NotFound("x")

    async def bug() -> None:
        raise ZeroDivisionError

    replies = [loop.create_future() for _ in range(3)]
    for fn, reply in zip((ok, expected, bug), replies):
        queue.submit(frozenset({"k"}), fn, reply)
    assert await replies[0] == 1
    with pytest.raises(NotFound):
        await replies[1]
    with pytest.raises(ZeroDivisionError):
        await replies[2]
    assert len(bugs) == 1 and isinstance(bugs[0], ZeroDivisionError)  # only the unexpected one is a bug

    script = Script()
    queue.submit(frozenset({"k"}), script.op("running"))
    late = loop.create_future()
    queue.submit(frozenset({"k"}), script.op("queued"), late)
    await eventually(lambda: script.log == ["running"], "the first op to run")
    queue.close()
    with pytest.raises(ActorStopped):
        await late
    after_close = loop.create_future()
    queue.submit(frozenset({"z"}), ok, after_close)
    with pytest.raises(ActorStopped):
        await after_close
    script.gates["running"].set()
    await queue.drain()
    assert script.log == ["running"]
