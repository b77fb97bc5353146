"""Faults for nodes that share one PostgreSQL journal: their sessions, a well-timed halt, a steady producer.

::

    pg_stat_activity ──NodeSessions──▶ node B's main journal session (pid, state, xid, last statement)
                                           │ poll until it is as wanted (preferably: as preferred)
    catch(halt, release) ──────────────────┤ halt B (SIGSTOP its process group, or freeze its proxy)
                                           │ let what B had already sent arrive and run, look again
                                           └ still as wanted: caught; else release and try again
    watch(pid) ── while B is halted: does the server end that session? who waits on its locks?

    SteadyProducer ── thread ── actorq.Client.enqueue_many(batch) every interval ──▶ accepted ids
    Ledger "start:<t>" / "end:<t>" entries ──runs()──▶ Run(job, attempt, node, start, end)

A node names its sessions ``actorq <node> journal`` (the main writer),
``actorq <node> duties`` and ``actorq <node> listener`` in ``application_name``.
An actorq that sets only ``actorq journal`` / ``actorq listener`` is matched by
the client ports of the node's own TCP connections instead (`client_ports`,
or `TcpProxy.upstream_ports` for a node behind a proxy).

Used by tests/node/test_pg_cluster_faults.py and bench/bench_pg_pause.py; it
imports nothing of the test suite (journal_support picks a test server on import).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

import psutil

from actorq import Client, Job
from actorq.errors import JournalError
from actorq.testing import LedgerEntry

IN_TRANSACTION = "idle in transaction"
SETTLE = 0.1  # seconds for what a halted node had already sent to reach the server (loopback: far less)


@dataclass(frozen=True)
class Session:
    """One row of ``pg_stat_activity``: a server process and what its client is doing."""

    pid: int
    state: str | None
    xid: str | None
    """``backend_xid``: set once the transaction has written or locked a row."""
    application_name: str
    client_port: int | None
    query: str | None
    """The statement running, or (when idle) the last one."""

    @property
    def holds_row_locks(self) -> bool:
        """Idle inside a transaction that has written or locked rows: what other sessions may wait on."""
        return self.state == IN_TRANSACTION and self.xid is not None

    @property
    def renewed_leadership(self) -> bool:
        """Its last statement claimed or renewed a leadership: the row of that duty is locked until it commits."""
        return self.query is not None and "actorq_leaders" in self.query


_COLUMNS = "pid, state, backend_xid::text, application_name, client_port, left(query, 200)"


def client_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of process `pid`'s TCP connections to `server_port`: their ``client_port`` on the server."""
    try:
        process = psutil.Process(pid)
        connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
        return {c.laddr.port for c in connections(kind="tcp") if c.raddr and c.raddr.port == server_port}
    except psutil.Error:
        return set()


class NodeSessions:
    """Finds one node's journal sessions in ``pg_stat_activity``.

    Args:
        admin: an autocommit psycopg connection (each query sees fresh activity).
        node: the node's name (``[node] name``).
        ports: the client ports of the node's connections, for an actorq whose
            ``application_name`` does not carry the node's name.
        role: which of the node's sessions `main` finds: ``journal`` or ``duties``.
    """

    def __init__(self, admin: Any, node: str, ports: Callable[[], set[int]], role: str = "journal") -> None:
        self.admin = admin
        self.node = node
        self.ports = ports
        self.role = role
        self._ports: list[int] = []  # read again only when they match no session: reading them costs ~1 ms

    def main(self) -> Session | None:
        """The node's session of `role` (``journal``: the main one, with acks, leases and enqueues;
        ``duties``: promotion, rescue and leadership), or None if it has none now."""
        for fresh in (False, True):
            if fresh:
                self._ports = sorted(self.ports())
            row = self.admin.execute(
                f"SELECT {_COLUMNS} FROM pg_stat_activity WHERE application_name = %s"
                " OR (application_name = 'actorq journal' AND client_port = ANY(%s))",
                (f"actorq {self.node} {self.role}", self._ports if self.role == "journal" else [])).fetchone()
            if row is not None:
                return Session(*row)
        return None

    def get(self, pid: int) -> Session | None:
        """The session served by server process `pid`, or None once the server has ended it."""
        row = self.admin.execute(f"SELECT {_COLUMNS} FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        return Session(*row) if row else None


class Caught(NamedTuple):
    """A node halted while its main journal session was as wanted."""

    session: Session
    tries: int
    """Halts it took (each earlier one was released at once)."""


def catch(sessions: NodeSessions, wanted: Callable[[Session], bool], halt: Callable[[], None],
          release: Callable[[], None], *, prefer: Callable[[Session], bool] | None = None, prefer_for: float = 0.0,
          confirm: Callable[[], bool] = lambda: True, tries: int = 30, look_for: float = 5.0) -> Caught:
    """Halt a node at a moment its main journal session is `wanted`, and check it stayed so.

    Polls ``pg_stat_activity`` in a tight loop; when the session is `wanted` (and, for
    the first `prefer_for` seconds, also `prefer`), calls `halt`, lets what the node had
    already sent arrive and run, and looks again: the same session still `wanted`,
    `confirm()` true, and the same a moment later, is a catch. Otherwise `release`, and
    try again.

    Raises:
        AssertionError: no catch in `tries` halts, or the session was never as wanted
            for `look_for` seconds of polling (after the `prefer_for` ones).
    """
    preferred_until = time.monotonic() + prefer_for

    def as_wanted(session: Session | None) -> bool:
        if session is None or not wanted(session):
            return False
        return prefer is None or time.monotonic() > preferred_until or prefer(session)

    for attempt in range(1, tries + 1):
        deadline = max(time.monotonic(), preferred_until) + look_for
        while not as_wanted(seen := sessions.main()):
            if time.monotonic() > deadline:
                raise AssertionError(f"node {sessions.node}'s main journal session was never as wanted in "
                                     f"{look_for:g} s of polling (last seen: {seen})")
        assert seen is not None
        halt()
        settled = _settled(sessions, seen.pid)
        if settled is not None and wanted(settled) and confirm():
            time.sleep(SETTLE)
            again = sessions.get(seen.pid)
            if again is not None and (again.state, again.xid) == (settled.state, settled.xid):
                return Caught(settled, attempt)
        release()
    raise AssertionError(f"could not halt node {sessions.node} with its main journal session as wanted "
                         f"in {tries} tries")


def _settled(sessions: NodeSessions, pid: int) -> Session | None:
    """Session `pid` once what its node sent before the halt has arrived and run (up to 1 s)."""
    time.sleep(SETTLE)  # a message already on its way (a COMMIT right after the last statement) lands
    settled = sessions.get(pid)
    until = time.monotonic() + 1.0
    while settled is not None and settled.state == "active" and time.monotonic() < until:
        time.sleep(0.01)
        settled = sessions.get(pid)
    return settled


class Halt(NamedTuple):
    """What a halted node's caught session went through (`watch`)."""

    ended_after: float | None
    """Seconds until the server ended it (it left ``pg_stat_activity``); None: it was still there."""
    most_waiting: int
    """The most sessions seen at once waiting on its locks (other nodes' writers, producers)."""


def watch(sessions: NodeSessions, pid: int, seconds: float, *,
          tick: Callable[[float, Halt], None] | None = None, tick_every: float = 2.0) -> Halt:
    """Watch session `pid` of a halted node for `seconds`: whether the server ends it, and who waits on it.

    `tick(elapsed, so_far)` runs every `tick_every` seconds (progress output).
    """
    start = time.monotonic()
    ended_after: float | None = None
    most_waiting = 0
    next_tick = start + tick_every
    while (now := time.monotonic()) < start + seconds:
        if ended_after is None:
            if sessions.get(pid) is None:
                ended_after = now - start
            else:
                waiting = sessions.admin.execute("SELECT count(*) FROM pg_stat_activity"
                                                 " WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)).fetchone()[0]
                most_waiting = max(most_waiting, waiting)
        if tick is not None and now >= next_tick:
            next_tick = now + tick_every
            tick(now - start, Halt(ended_after, most_waiting))
        time.sleep(0.05)
    return Halt(ended_after, most_waiting)


class SteadyProducer:
    """A thread that commits `batch` jobs every `interval` seconds through its own `actorq.Client`.

    `accepted` holds the ids whose commit returned; `attempted` those whose commit
    raised (outcome unknown: they may be in the journal). Read both after `stop`.

    Args:
        url, schema: the journal.
        make_job: a new job each call.
        batch: jobs per commit.
        interval: seconds between commits.
    """

    def __init__(self, url: str, schema: str, make_job: Callable[[], Job], *, batch: int = 5,
                 interval: float = 0.05) -> None:
        self.url, self.schema = url, schema
        self.make_job, self.batch, self.interval = make_job, batch, interval
        self.accepted: set[str] = set()
        self.attempted: set[str] = set()
        self.errors: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)

    def start(self) -> "SteadyProducer":
        """Start producing; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        with Client(self.url, schema=self.schema) as client:
            while not self._stopping.wait(self.interval):
                jobs = [self.make_job() for _ in range(self.batch)]
                try:
                    self.accepted.update(client.enqueue_many(jobs))
                except JournalError as exc:
                    self.attempted.update(job.id for job in jobs)
                    self.errors.append(str(exc))

    def stop(self) -> None:
        """Stop after the commit under way; returns once the thread has ended."""
        self._stopping.set()
        self._thread.join(60)


class Run(NamedTuple):
    """One execution of a job, from the ledger entries ``start:<monotonic>`` and ``end:<monotonic>``."""

    job_id: str
    attempt: int
    node: str
    """The node run that executed it (``AQTEST_RUN``)."""
    started: float
    ended: float | None
    """None: it never finished (cancelled, killed, or still running)."""


def runs(entries: Iterable[LedgerEntry]) -> list[Run]:
    """Pair the start and end entries of each execution (tags ``<run>/<incarnation>/start:<t>``)."""
    open_runs: dict[tuple[str, int, int], tuple[str, float]] = {}
    done: list[Run] = []
    for entry in entries:
        node, _, note = entry.tag.split("/", 2)
        kind, _, at = note.partition(":")
        key = (entry.job_id, entry.attempt, entry.pid)
        if kind == "start":
            open_runs[key] = (node, float(at))
        elif kind == "end" and key in open_runs:
            node, started = open_runs.pop(key)
            done.append(Run(entry.job_id, entry.attempt, node, started, float(at)))
    done += [Run(job_id, attempt, node, started, None) for (job_id, attempt, _), (node, started) in open_runs.items()]
    return done


def started_after_a_success(all_runs: Iterable[Run]) -> list[tuple[Run, Run]]:
    """``(earlier, later)`` runs of one job where the later one started after the earlier one had finished.

    A run that finished succeeded (the tasks using this never raise), so its job was done: a
    later start is work done twice by someone who should have known better (a lapsed lease).
    """
    by_job: dict[str, list[Run]] = {}
    for run in all_runs:
        by_job.setdefault(run.job_id, []).append(run)
    found = []
    for job_runs in by_job.values():
        job_runs.sort(key=lambda r: r.started)
        for i, earlier in enumerate(job_runs):
            if earlier.ended is None:
                continue
            found += [(earlier, later) for later in job_runs[i + 1:] if later.started > earlier.ended]
    return found
