"""Actors: tell, ask, and a timeout, from asyncio and from plain code."""

import asyncio

import actorq


class Counter(actorq.Actor):
    """Counts the numbers it is told; answers "total" when asked."""

    def __init__(self) -> None:
        self.total = 0

    def on_receive(self, message: int) -> None:
        self.total += message

    def on_ask(self, message: str) -> int:
        if message == "total":
            return self.total
        raise ValueError(f"unknown question {message!r}")


class Sleepy(actorq.Actor):
    async def on_ask(self, message: object) -> None:
        await asyncio.sleep(0.5)  # longer than the asker waits


async def main() -> None:
    async with actorq.ActorSystem() as system:
        counter = await system.spawn(Counter, name="counter")
        for n in range(1, 11):
            counter.tell(n)  # returns at once
        print("async total:", await counter.ask("total"))
        sleepy = await system.spawn(Sleepy, name="sleepy")
        try:
            await sleepy.ask("hello?", timeout=0.1)
        except actorq.AskTimeout as exc:
            print("timeout:", exc)


asyncio.run(main())

# The same from synchronous code: the system runs its loop on a background thread.
with actorq.ActorSystem() as system:
    counter = system.spawn_sync(Counter)
    counter.tell(40)
    counter.tell(2)
    print("sync total:", counter.ask_sync("total"))

# Output:
# async total: 55
# timeout: no reply from sleepy within 0.1 s
# sync total: 42
