"""Event loop selection: uvloop where it is installed, asyncio's loop otherwise."""

from __future__ import annotations

import asyncio

try:  # uvloop is a dependency on every platform that has it
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - platforms without uvloop (Windows)
    _uvloop = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return a new event loop, a uvloop one when uvloop is available."""
    if _uvloop is not None:
        return _uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: "asyncio.coroutines._CoroutineLike[object]") -> object:  # type: ignore[name-defined]
    """Run a coroutine to completion on a new loop from `new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
