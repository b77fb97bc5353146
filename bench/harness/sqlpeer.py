"""What the adapters of the SQL-backed peers share (procrastinate, pgqueuer, DBOS, queue-max, dj-queue).

Standard library only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from peer import PEERS, Context, bin_of, check_started

PG_ENV = "BENCH_PG_URL"  # the variable that gives a worker process the run's database URL


def worker_env(ctx: Context, modules: Sequence[str], **extra: str) -> tuple[dict[str, str], Path]:
    """The environment of a peer's worker process, and the folder it runs in.

    ``modules`` (file names under ``bench/peers``, e.g. ``"procrastinate_app.py"``)
    are copied to that folder (`Context.app`), which PYTHONPATH holds with the
    harness; the run's database URL is in `PG_ENV`; ``extra`` variables are added.
    """
    app = ctx.app(*modules)
    env = ctx.env(app)
    if ctx.pg_url:
        env[PG_ENV] = ctx.pg_url
    env.update(extra)
    return env, app


__all__ = ["PEERS", "PG_ENV", "bin_of", "check_started", "worker_env"]
