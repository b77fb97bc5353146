"""Small helpers shared by the adapters of the SQL-backed peers (procrastinate, pgqueuer, DBOS, queue-max, dj-queue).

Standard library only. The adapter scripts are named after the package they
benchmark (``procrastinate.py``, ``dbos.py``...), so while ``bench/peers`` is
on ``sys.path`` an ``import procrastinate`` finds the adapter, not the
package. `unshadow` takes the folder off this process's path, and
`worker_env` gives worker processes a path that holds the task module and the
harness but not ``bench/peers``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

PEERS = Path(__file__).resolve().parent
HARNESS = PEERS.parent / "harness"
PG_ENV = "BENCH_PG_URL"  # the variable that gives a worker process the run's database URL


def unshadow() -> None:
    """Drop ``bench/peers`` from ``sys.path`` (modules already imported from it stay loaded)."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PEERS]
    if str(HARNESS) not in sys.path:
        sys.path.insert(0, str(HARNESS))


def worker_env(ctx, modules: Sequence[str], **extra: str) -> tuple[dict[str, str], Path]:
    """The environment of a peer's worker process, and the folder it should run in.

    ``modules`` (file names under ``bench/peers``, e.g. ``"procrastinate_app.py"``)
    are copied to ``<workdir>/app``; PYTHONPATH is that folder and the harness
    (for ``ledger``), never ``bench/peers``. ``extra`` variables are added.
    """
    app = Path(ctx.workdir) / "app"
    app.mkdir(parents=True, exist_ok=True)
    for name in modules:
        shutil.copyfile(PEERS / name, app / name)
    env = ctx.env()
    keep = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and Path(p).resolve() != PEERS]
    env["PYTHONPATH"] = os.pathsep.join([str(app), *keep])
    if ctx.pg_url:
        env[PG_ENV] = ctx.pg_url
    env.update(extra)
    return env, app


def check_started(procs: Sequence, logs: Sequence[Path], wait: float = 0.5) -> None:
    """Raise with the log's tail if a worker process already exited ``wait`` seconds after its start."""
    time.sleep(wait)
    for proc, log in zip(procs, logs):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"worker exited with {proc.returncode} at start: {tail}")


def bin_of(command: str) -> str:
    """The console script ``command`` of this interpreter's virtualenv (beside ``sys.executable``)."""
    path = Path(sys.executable).parent / command
    if not path.exists():
        raise FileNotFoundError(f"{command} is not installed beside {sys.executable}")
    return str(path)
