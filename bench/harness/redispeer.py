"""What the adapters of the Redis-backed peers share (Celery, Dramatiq, RQ, arq, taskiq, Huey on Redis).

Imports ``redis`` only when called: it is installed in those peers' own virtualenvs.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any, Sequence

from peer import Context, stop_group

URL_ENV = "BENCH_REDIS_URL"  # the variable that gives a worker process the run's Redis URL
STOP_WAIT = 15.0  # seconds a graceful stop may take


def client(ctx: Context, peer: str) -> Any:
    """A client of the phase's Redis database (the harness gives each phase one of its own)."""
    import redis

    if not ctx.redis_url:
        raise RuntimeError(f"{peer} needs --redis-url")
    return redis.Redis.from_url(ctx.redis_url)


def flush(ctx: Context, peer: str) -> None:
    """Empty the phase's Redis database; a server that is gone has nothing to empty."""
    import redis

    if not ctx.redis_url:
        return
    try:
        client(ctx, peer).flushdb()
    except redis.exceptions.ConnectionError:
        pass


def stop(procs: Sequence[subprocess.Popen[bytes]], wait: float = STOP_WAIT) -> None:
    """SIGTERM to each worker's main process at once (each peer's own graceful stop: it forwards
    the signal to its children once; a signal to the whole session made some kill themselves),
    then SIGKILL what is left of each session after ``wait`` seconds."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass
        stop_group(proc, wait=5.0)


__all__ = ["STOP_WAIT", "URL_ENV", "client", "flush", "stop"]
