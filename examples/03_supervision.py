"""Supervise your own actors and OS processes, as OTP does.

A `rest_for_one` supervisor starts a cache actor, then a counter actor that
reads from it, then a program in its own OS process. A crash of the counter
restarts the counter and what was started after it (the process), never the
cache; a SIGKILL of the process restarts only the process. Too many restarts
in the window and the supervisor gives up, stopping its children in reverse
order (its parent, if it had one, would then decide).

Run: python examples/03_supervision.py
"""

import asyncio
import os
import signal
import sys

import actorq
from actorq.supervisors import ChildSpec, SupFlags, actor_start, process_start, start_supervisor


class Cache(actorq.Actor):
    """Holds values across restarts of the actors that use it."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def on_ask(self, message: tuple[str, str, int]) -> int:
        op, key, value = message
        if op == "put":
            self.values[key] = value
        return self.values.get(key, 0)


class Counter(actorq.Actor):
    """Counts in the cache; a message "boom" crashes it."""

    async def on_ask(self, message: str) -> int:
        if message == "boom":
            raise RuntimeError("boom")
        cache = self.system.whereis("cache")
        n = await cache.ask(("get", "n", 0)) + 1
        return await cache.ask(("put", "n", n))


async def children_of(sup) -> dict[str, object]:
    return {info.id: info.pid for info in await sup.which_children()}


async def settled(sup, old: dict[str, object], changed: str) -> dict[str, object]:
    """Wait until child `changed` has a new pid and every child is running again."""
    while True:
        infos = await sup.which_children()
        now = {info.id: info.pid for info in infos}
        if now[changed] != old[changed] and all(info.state == "running" for info in infos):
            return now
        await asyncio.sleep(0.01)


async def main() -> None:
    async with actorq.ActorSystem() as system:
        sleeper = process_start([sys.executable, "-c", "import time; time.sleep(3600)"])
        sup = await start_supervisor(system, SupFlags("rest_for_one", intensity=2, period=60), [
            ChildSpec("cache", actor_start(Cache, name="cache")),
            ChildSpec("counter", actor_start(Counter, name="counter")),
            ChildSpec("sleeper", sleeper, shutdown=2.0),
        ])
        before = await children_of(sup)
        counter = system.whereis("counter")
        print("count:", await counter.ask("tick"), await counter.ask("tick"))

        try:
            await counter.ask("boom")
        except RuntimeError as exc:
            print("counter crashed:", exc)
        after = await settled(sup, before, "counter")
        print("cache kept:", after["cache"] == before["cache"])
        print("counter restarted:", after["counter"] != before["counter"])
        print("process after it restarted:", after["sleeper"] != before["sleeper"])
        print("count survives in the cache:", await system.whereis("counter").ask("tick"))

        os.kill(after["sleeper"], signal.SIGKILL)  # a crash of the OS process
        last = await settled(sup, after, "sleeper")
        print("restarts:", {i.id: i.restarts for i in await sup.which_children()})

        os.kill(last["sleeper"], signal.SIGKILL)  # the 3rd restart in 60 s: more than intensity 2
        print("supervisor gave up:", (await sup.wait()).kind)
        print("children left:", system.whereis("cache"), system.whereis("counter"))


asyncio.run(main())

# Output:
# count: 1 2
# counter crashed: boom
# cache kept: True
# counter restarted: True
# process after it restarted: True
# count survives in the cache: 3
# restarts: {'cache': 0, 'counter': 1, 'sleeper': 2}
# supervisor gave up: shutdown
# children left: None None
