"""actorq through the same adapter contract as every peer (bench/harness/peer.py).

Runs with actorq's own Python (the repository's virtualenv), never a peer's.

Set-up, as a user deploys it on 2 cores:

- workers: one real ``actorq run --config topology.toml`` node process with 2
  worker processes and every other setting at the node's default (16 slots and
  16 prefetch per worker process, INFO logs); its task module is
  ``actorq_app.py`` (``bench.record(i)``, an async task whose body is
  ``ledger.record_job(i)``), copied beside the topology file;
- producer: ``actorq.Client``, one job per ``enqueue`` call, each returning once
  the job is committed (the Client's default path: on SQLite through the running
  node's producer endpoint, which commits in groups, or straight into the file
  when no node runs, as in the drain phase's enqueue; on PostgreSQL an INSERT
  whose trigger NOTIFYs the nodes); ``enqueue_batch`` is ``enqueue_many`` (one
  transaction per call);
- `remaining` is the journal's count of jobs in a state that is not final.

Variants and their durability class:

- ``sqlite-full``: WAL, ``synchronous=FULL``: a commit is fsync'd before the
  producer hears of it (class ``fsync``).
- ``sqlite-normal``: WAL, ``synchronous=NORMAL``: a commit is in the WAL file
  (the OS's page cache) when the producer hears of it, and fsync'd at the next
  checkpoint. SQLite documents that such a commit survives the crash of any
  process, but may roll back after a power loss or an OS crash
  (https://www.sqlite.org/pragma.html#pragma_synchronous); checked here by
  SIGKILLing a writer right after its commit returned, see bench/README.md
  (class ``process``).
- ``postgresql``: the server's defaults (``synchronous_commit=on``, ``fsync=on``),
  a fresh schema in ``--pg-url`` dropped afterwards (class ``fsync``).

The script's folder holds this file, named ``actorq.py``: it takes its own folder
off ``sys.path`` before importing the package of that name, and the node's
processes get only the harness's folder on PYTHONPATH (not ``bench/peers``);
actorq_rows.py loads it as the module ``actorq_adapter``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
# this file is named actorq.py: its own folder must not shadow the actorq package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
for _path in (BENCH / "harness", BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_e2e  # noqa: E402  (puts the repository on sys.path)
from bench_nodes import NodeRun  # noqa: E402
from ledger import ENV  # noqa: E402
from peer import Adapter, Context, main  # noqa: E402

import actorq  # noqa: E402
from actorq.journal import TERMINAL_STATES  # noqa: E402

REQUIREMENTS: list[str] = []  # none: it runs in actorq's own virtualenv
TASK = "bench.record"
APP = HERE / "actorq_app.py"
SCHEMA_FILE = "pg-schema"  # in the workdir: the fresh schema's name, for the producer process
NODE_START_TIMEOUT = 60.0


class ActorQ(Adapter):
    """actorq: `actorq run` nodes and an `actorq.Client` producer (see the module's docstring)."""

    name = "actorq"
    variants = {
        "sqlite-full": "fsync per group commit, before the producer is answered",
        "sqlite-normal": "WAL without fsync at commit: survives a process crash, not a power loss",
        "postgresql": "synchronous_commit=on: fsync per commit, before the producer is answered",
    }
    classes = {"sqlite-full": "fsync", "sqlite-normal": "process", "postgresql": "fsync"}
    needs = ()  # the SQLite variants need no server; the postgresql variant's is in `variant_needs`
    #: variant -> the servers it needs (beyond the contract's per-adapter `needs`)
    variant_needs = {"postgresql": ("postgresql",)}
    storage = "SQLite WAL (sqlite-*), PostgreSQL (postgresql)"
    has_batch = True
    nodes = 1  # `actorq run` processes started by `start_workers` (actorq_rows.py's nodes rows use 2)
    #: PostgreSQL: finished jobs added to the fresh schema before it is ANALYZEd, as a journal in
    #: service has (bench_e2e.seed_history); 0 here, as every peer gets an empty database
    history = 0
    #: (section, key, value) settings applied last to each node's topology (actorq_rows.py's ``--set``);
    #: none here: the node's defaults
    overrides: tuple[tuple[str, str, object], ...] = ()

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.postgres = ctx.variant == "postgresql"
        self.workdir = ctx.workdir.resolve()  # the node runs in it: its paths must not be relative
        self.runs: list[NodeRun] = []
        self.client: actorq.Client | None = None
        self.schema = "actorq"
        if self.postgres:
            self.url = ctx.pg_url or ""  # none: `setup` and `connect` say so, inside the driver's result
            known = self.workdir / SCHEMA_FILE
            if known.exists():
                self.schema = known.read_text().strip()
        else:
            self.url = f"sqlite:///{self.workdir / 'journal.db'}"
        self.synchronous = "normal" if ctx.variant == "sqlite-normal" else "full"

    # -- storage -------------------------------------------------------------------------------
    def setup(self) -> None:
        """A fresh journal: the workdir's file, or a new schema (named in the workdir for the producer)."""
        self._check_url()
        if self.postgres:
            self.schema = bench_e2e.new_schema_name()
            (self.workdir / SCHEMA_FILE).write_text(self.schema)
            if self.history:
                bench_e2e.seed_history(self.url, self.schema, self.history)
            else:
                from actorq.journal import migrate

                migrate(self.url, self.schema)
        shutil.copy2(APP, self.workdir / APP.name)

    def topology(self, name: str) -> str:
        """The node's topology file: its tasks, the journal, 2 worker processes, the rest defaults
        (then `overrides`)."""
        journal = ({"url": self.url, "schema": self.schema} if self.postgres
                   else {"url": self.url, "synchronous": self.synchronous})
        sections: dict[str, dict[str, object]] = {"node": {"name": name, "tasks": ["actorq_app:registry"]},
                                                  "journal": journal, "workers": {"processes": self.ctx.processes}}
        for section, key, value in self.overrides:
            sections.setdefault(section, {})[key] = value
        return "".join(f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
                       for section, keys in sections.items())

    # -- the producer ----------------------------------------------------------------------------
    def _check_url(self) -> None:
        if self.postgres and not self.url.startswith(bench_e2e.POSTGRES_SCHEMES):
            raise ValueError("variant postgresql needs --pg-url postgresql://...")

    def connect(self) -> None:
        self._check_url()
        self.client = (actorq.Client(self.url, schema=self.schema) if self.postgres
                       else actorq.Client(self.url, synchronous=self.synchronous))

    def enqueue(self, i: int) -> None:
        assert self.client is not None
        self.client.enqueue(actorq.Job(TASK, (i,)))

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        assert self.client is not None
        self.client.enqueue_many([actorq.Job(TASK, (i,)) for i in ids])

    # -- the workers -------------------------------------------------------------------------------
    def worker_env(self) -> None:
        """This process's environment as the nodes get it: the ledger, the harness's folder on
        PYTHONPATH (for ``ledger``), never this script's folder (its actorq.py)."""
        os.environ[ENV] = str(Path(self.ctx.ledger).resolve())
        keep = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if p and Path(p).resolve() != HERE]
        os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCH / "harness"), *keep])

    def start_workers(self) -> None:
        """Start `nodes` ``actorq run`` processes; return once each has its workers connected
        (on SQLite also its producer endpoint published, so a Client goes through it)."""
        self.worker_env()
        for k in range(1, self.nodes + 1):
            self.runs.append(NodeRun.launch(self.workdir, f"bench-{k}", self.topology(f"bench-{k}")))
        deadline = time.monotonic() + NODE_START_TIMEOUT
        for run in self.runs:
            while not self._started(run):
                run.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {run.name} did not start within {NODE_START_TIMEOUT:g} s:\n"
                                       + run.tail())
                time.sleep(0.02)

    def _started(self, run: NodeRun) -> bool:
        if len(run.pids()) < 1 + self.ctx.processes:
            return False
        if self.postgres:
            return True
        from actorq.jobs.node_file import NodeNotRunning, node_file_beside, read_node_file

        try:
            info = read_node_file(node_file_beside(self.workdir / "journal.db"))
        except (NodeNotRunning, OSError):
            return False
        return str(info.get("producers", "")).startswith(("ipc://", "tcp://"))

    def stop_workers(self) -> None:
        """SIGTERM every node (a graceful stop), SIGKILL what is left after 30 s."""
        for run in self.runs:
            run.terminate()
        for run in self.runs:
            run.stop(timeout=30.0)
        self.runs = []

    def node_pids(self) -> list[int]:
        """Every running node process and its worker processes."""
        return [pid for run in self.runs for pid in run.pids()]

    def remaining(self) -> int:
        """Jobs of the journal in a state that is not final (ready, leased, scheduled, ...)."""
        with (actorq.Client(self.url, schema=self.schema, create=False) if self.postgres
              else actorq.Client(self.url, create=False)) as client:
            counts = client.counts()
        return sum(n for states in counts.values() for state, n in states.items() if state not in TERMINAL_STATES)

    def teardown(self) -> None:
        if self.runs:
            self.stop_workers()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.postgres and (self.workdir / SCHEMA_FILE).exists():
            bench_e2e.drop_schema(self.url, self.schema)
            (self.workdir / SCHEMA_FILE).unlink()


def exit_on_sigterm() -> None:
    """SIGTERM ends this process through its ``finally`` blocks, so the nodes it started (each in
    a session of its own) are stopped with it rather than left running."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


if __name__ == "__main__":
    exit_on_sigterm()
    main(ActorQ)
