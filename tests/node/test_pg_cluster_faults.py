"""Two ``actorq run`` nodes on one PostgreSQL schema, under journal faults (scenarios C17, C18, C19; issue 11).

Nodes A and B share a fresh schema: leases of 4 s, a leader TTL of 2 s, 2 worker
processes each. B starts first, so it leads the rescue duty. A producer thread
commits jobs through `actorq.Client` the whole time. The faults:

* C17: B (its whole process group) is SIGSTOPped at a moment its main journal
  session is idle in transaction holding row locks, for longer than a lease;
* a network cut: B's journal connections go through a TCP proxy that stops
  forwarding at such a moment, its sockets left open;
* C18: B's batch of journal ops deadlocks with another transaction, and
  PostgreSQL aborts B's;
* C19: B resumes after its leases lapsed, its workers holding prefetched jobs.

Every task records its start and its end (monotonic clock, which all processes
share) in its node's ledger. Each test ends with the total-queue check: every
accepted id is in the journal and succeeded, nothing else is there, and no job
ran twice in one attempt. Progress is asserted in jobs done during a window,
never in time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import psycopg
import pytest

from actorq import Job
from actorq.testing import QueueCheck, check_total_queue, eventually
from journal_support import PG_ADDRESS, PG_URL, TcpProxy, pg_admin
from node_process import NodeProcess
from pg_faults import (
    Caught, NodeSessions, Run, Session, SteadyProducer, catch, client_ports, runs, started_after_a_success, watch,
)

TASK = "pgfault.work"
TASKS = f"""
@registry.task({TASK!r})
async def work(seconds):
    record(f"start:{{time.monotonic():.6f}}")
    await asyncio.sleep(seconds)
    record(f"end:{{time.monotonic():.6f}}")
"""
LEASE_TIMEOUT = 4.0
LEADER_TTL = 2.0
PAUSE = 6.0  # past B's leases (4 s), its leadership (2 s) and B's idle-in-transaction limit (at most 2 s)
MIN_PROGRESS = 40  # jobs A gets done during the pause: it does hundreds when nothing holds it up


def _url_through(port: int) -> str:
    """The test server's URL with its host and port replaced by a local proxy's."""
    parts = urlsplit(PG_URL)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()


@dataclass
class Window:
    """What happened while node B was halted."""

    done_by_a: int
    """Jobs whose success the journal stored meanwhile: B could commit nothing, so all A's."""
    runs_by_a: int
    session_ended_after: float | None
    """Seconds until the server ended B's halted session; None: it was still there at the end."""
    waiting_on_b: int
    """The most sessions seen at once waiting on the locks of B's session (A's writer, the producer)."""
    leased_to_b: int
    """Jobs leased to B when it was halted (for the record: their leases lapse during the pause)."""
    of_them_done: int
    """How many of those succeeded before B came back (A rescued them, unless B's locks held them)."""


@dataclass
class Outcome:
    """How a test's run ended, gathered before anything is asserted."""

    check: QueueCheck
    drained: bool
    states: Counter[str]
    unknown: set[str]
    """Ids in the journal that the producer never sent."""
    twice_in_one_attempt: dict[tuple[str, int], int]
    runs: list[Run]
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.check.summary()}; journal states {dict(self.states)}; drained {self.drained}; "
                f"exit codes {self.exit_codes}")


class Cluster:
    """Nodes A and B on one schema, B started first (so it leads), and a steady producer.

    Args:
        topology, schema: the fixtures.
        url_b: B's journal URL (default: the test server, as A's).
        task_seconds: how long each job's task sleeps.
        processes_b, prefetch_b: B's worker processes and their prefetch.
        journal_b: more ``[journal]`` keys for B.
        batch, interval: the producer's jobs per commit and seconds between commits.
        delay: the producer's jobs wait this long in ``scheduled`` before a node promotes them.
    """

    def __init__(self, topology: Any, schema: str, *, url_b: str | None = None, task_seconds: float = 0.1,
                 processes_b: int = 2, prefetch_b: int = 2, journal_b: dict[str, float] | None = None,
                 batch: int = 3, interval: float = 0.1, delay: float | None = None) -> None:
        common: dict[str, Any] = dict(concurrency=2, lease_timeout=LEASE_TIMEOUT, leader_ttl=LEADER_TTL,
                                      shutdown_timeout=5.0, schema=schema)
        self.topo_a = topology(TASKS, name="node-a", toml_name="node-a.toml", journal_url=PG_URL, processes=2,
                               prefetch=2, **common)
        self.topo_b = topology(TASKS, name="node-b", toml_name="node-b.toml", journal_url=url_b or PG_URL,
                               processes=processes_b, prefetch=prefetch_b, journal_extra=journal_b, **common)
        self.jobs_table = f'"{schema}".actorq_jobs'
        self.schema = schema
        self.server_port = PG_ADDRESS[1]
        self.admin = pg_admin()
        self.producer = SteadyProducer(PG_URL, schema, lambda: Job(TASK, [task_seconds], delay=delay),
                                       batch=batch, interval=interval)
        self.a: NodeProcess | None = None
        self.b: NodeProcess | None = None

    # -- starting, halting, finishing ---------------------------------------------------------------
    async def start(self) -> None:
        """Start B, wait until it leads, start A and the producer, wait until both nodes ran jobs."""
        self.b = NodeProcess(self.topo_b, 2)
        await eventually(lambda: self.leader().startswith("node-b/"), timeout=60, message="node B leads")
        self.a = NodeProcess(self.topo_a, 1)
        self.producer.start()
        await eventually(lambda: self.topo_a.ledger.count() > 0 and self.topo_b.ledger.count() > 0, timeout=60,
                         message="both nodes ran jobs")

    def sessions_b(self, ports: Callable[[], set[int]] | None = None, role: str = "journal") -> NodeSessions:
        """B's journal sessions of `role`; `ports`: its client ports when it is behind a proxy."""
        assert self.b is not None
        pid = self.b.pid
        return NodeSessions(self.admin, "node-b", ports or (lambda: client_ports(pid, self.server_port)), role)

    def halt_b(self) -> None:
        """SIGSTOP B's process group: the node and its workers."""
        assert self.b is not None
        os.killpg(self.b.pid, signal.SIGSTOP)

    def release_b(self) -> None:
        """SIGCONT B's process group."""
        assert self.b is not None
        os.killpg(self.b.pid, signal.SIGCONT)

    def hold(self, sessions: NodeSessions, caught: Session) -> Window:
        """Keep B halted for `PAUSE` seconds, watching its caught session and counting A's work."""
        started = time.monotonic()
        done, ran = self.count("succeeded"), self.starts(self.topo_a)
        held = [job_id for job_id, _ in self.leased_to("node-b")]
        halt = watch(sessions, caught.pid, PAUSE - (time.monotonic() - started))
        held_done = self.admin.execute(f"SELECT count(*) FROM {self.jobs_table} WHERE id = ANY(%s)"
                                       " AND state = 'succeeded'", (held,)).fetchone()[0]
        return Window(self.count("succeeded") - done, self.starts(self.topo_a) - ran, halt.ended_after,
                      halt.most_waiting, len(held), held_done)

    async def finish(self) -> Outcome:
        """Stop the producer, wait (bounded) for the queue to drain, stop both nodes, gather the outcome."""
        self.producer.stop()
        try:
            await eventually(lambda: not self.count_live(), timeout=60, message="every job finished")
            drained = True
        except AssertionError:
            drained = False
        exit_codes: dict[str, int | None] = {}
        nodes = {"node-a": self.a, "node-b": self.b}
        for node in nodes.values():
            assert node is not None
            if node.proc.poll() is None:  # one that died meanwhile shows in its exit code
                os.kill(node.pid, signal.SIGTERM)
        for name, node in nodes.items():
            assert node is not None
            try:
                exit_codes[name] = await node.exit_code(timeout=60)
            except AssertionError:
                exit_codes[name] = None
        states = self.states()
        entries = self.topo_a.ledger.read() + self.topo_b.ledger.read()
        starts = [e for e in entries if "/start:" in e.tag]
        accepted, attempted = self.producer.accepted, self.producer.attempted
        check = check_total_queue(accepted, starts, {j for j, s in states.items() if s == "succeeded"},
                                  attempted=attempted)
        per_attempt = Counter((e.job_id, e.attempt) for e in starts)
        return Outcome(check, drained, Counter(states.values()), set(states) - accepted - attempted,
                       {key: n for key, n in per_attempt.items() if n > 1}, runs(entries), exit_codes)

    def close(self) -> None:
        """Kill whatever is still running (after a failure) and close the admin connection."""
        self.producer.stop()
        for node in (self.a, self.b):
            if node is not None and node.proc.poll() is None:
                node.kill_everything()
        self.admin.close()

    # -- reading the journal --------------------------------------------------------------------------
    def leader(self) -> str:
        """The holder of the rescue duty ("" if none)."""
        row = self.admin.execute(f'SELECT holder FROM "{self.schema}".actorq_leaders WHERE name = %s',
                                 ("rescue",)).fetchone()
        return row[0] if row else ""

    def count(self, state: str) -> int:
        return self.admin.execute(f"SELECT count(*) FROM {self.jobs_table} WHERE state = %s",
                                  (state,)).fetchone()[0]

    def count_live(self) -> int:
        return self.admin.execute(f"SELECT count(*) FROM {self.jobs_table}"
                                  " WHERE state IN ('ready', 'leased', 'scheduled', 'retry')").fetchone()[0]

    def states(self) -> dict[str, str]:
        return dict(self.admin.execute(f"SELECT id, state FROM {self.jobs_table}").fetchall())

    def leased_to(self, node: str) -> set[tuple[str, int]]:
        """``(job id, attempt)`` of the jobs leased to `node` now."""
        rows = self.admin.execute(f"SELECT id, attempts FROM {self.jobs_table}"
                                  " WHERE state = 'leased' AND starts_with(lease_owner, %s)", (f"{node}/",))
        return {(job_id, attempt) for job_id, attempt in rows}

    def errors(self) -> list[tuple[str, int, str]]:
        """Every recorded error: ``(job id, attempt, error)``."""
        return self.admin.execute(f'SELECT job_id, attempt, error FROM "{self.schema}".actorq_errors'
                                  " ORDER BY seq").fetchall()

    @staticmethod
    def starts(topo: Any) -> int:
        return sum(1 for e in topo.ledger.read() if "/start:" in e.tag)


async def _halted_inside_a_transaction(cluster: Cluster, halt: Callable[[], None], release: Callable[[], None],
                                       ports: Callable[[], set[int]] | None = None) -> tuple[Caught, Window, Outcome]:
    """Start `cluster`; `halt` B when its main session is idle in transaction holding row locks (acks,
    leases); `release` it after `PAUSE` s; let everything finish. `ports`: B's client ports, when it is
    behind a proxy.

    (B's leadership renewals run on a session of their own, its "duties" one, and can no longer
    hold up the main one: a leaders row locked by a paused node costs another node's duty
    session one ``lock_timeout``, and its acks nothing. See tests/journal/test_pg_contention.py.)
    """
    try:
        await cluster.start()
        sessions = cluster.sessions_b(ports)
        caught = catch(sessions, lambda s: s.holds_row_locks, halt, release)
        try:
            window = cluster.hold(sessions, caught.session)
        finally:
            release()
        return caught, window, await cluster.finish()
    finally:
        cluster.close()


def _assert_whole_queue(outcome: Outcome) -> None:
    """The total-queue check, and a clean stop of both nodes."""
    assert outcome.drained, f"jobs still live 60 s after the producer stopped: {dict(outcome.states)}"
    assert outcome.check.valid, outcome.check.summary()
    assert not outcome.unknown, f"jobs in the journal that were never sent: {sorted(outcome.unknown)[:5]}"
    assert set(outcome.states) == {"succeeded"}, dict(outcome.states)
    assert not outcome.twice_in_one_attempt, f"ran twice in one attempt: {outcome.twice_in_one_attempt}"
    assert outcome.exit_codes == {"node-a": 0, "node-b": 0}, outcome.exit_codes


def _assert_a_went_on(window: Window, how: str) -> None:
    assert window.done_by_a >= MIN_PROGRESS, (
        f"node A got {window.done_by_a} jobs done in the {PAUSE:g} s B was {how} ({window.runs_by_a} runs in its "
        f"ledger): it waited on B's locks")
    assert window.session_ended_after is not None, (
        f"the server did not end B's session in the {PAUSE:g} s B was {how}: it stayed idle in transaction, "
        "holding its locks")


async def test_c17_a_node_paused_inside_a_transaction_holds_up_neither_the_other_node_nor_any_job(topology, pg_schema):
    """C17: B is SIGSTOPped while its main journal session is idle in transaction holding row locks.

    Node A must keep completing jobs during the pause (it skips or outwaits B's locks),
    the server must end B's session within the pause (``idle_in_transaction_timeout``,
    releasing the locks), and once B resumes every job drains, none lost, none run twice
    in one attempt.
    """
    cluster = Cluster(topology, pg_schema)
    caught, window, outcome = await _halted_inside_a_transaction(cluster, cluster.halt_b, cluster.release_b)
    print(f"C17: B halted after {caught.tries} tries, {caught.session}; {window}", outcome.summary(), sep="\n")
    _assert_a_went_on(window, "paused")
    _assert_whole_queue(outcome)


@pytest.mark.soak  # C17's network-cut form (13 s); its pause form runs in the default suite
async def test_a_node_cut_off_inside_a_transaction_holds_up_neither_the_other_node_nor_any_job(topology, pg_schema):
    """C17, as a network cut: B's link to PostgreSQL stops carrying anything, its TCP sessions left open.

    B's journal connections go through an in-test proxy (A's do not). When B's main
    session is idle in transaction holding row locks, the proxy stops forwarding both
    ways for `PAUSE` seconds. As with a pause: A keeps completing jobs, the server ends
    B's session within the cut, and after the link heals everything drains.
    """
    proxy = TcpProxy(PG_ADDRESS)
    try:
        cluster = Cluster(topology, pg_schema, url_b=_url_through(proxy.port))
        caught, window, outcome = await _halted_inside_a_transaction(cluster, proxy.freeze, proxy.thaw,
                                                                     proxy.upstream_ports)
    finally:
        proxy.close()
    print(f"cut: B cut off after {caught.tries} tries, {caught.session}; {window}", outcome.summary(), sep="\n")
    _assert_a_went_on(window, "cut off")
    _assert_whole_queue(outcome)


def _blocked_by(sessions: NodeSessions, blocker: int, timeout: float) -> Session | None:
    """The node's session once it waits on a lock server process `blocker` holds; None if not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        main = sessions.main()
        if main is not None:
            waiting = sessions.admin.execute("SELECT %s = ANY(pg_blocking_pids(%s))", (blocker, main.pid)).fetchone()
            if waiting[0]:
                return sessions.get(main.pid)
        time.sleep(0.01)
    return None


async def test_c18_a_deadlock_aborts_node_bs_batch_and_none_of_its_ops_is_lost(topology, pg_schema, caplog,
                                                                                  monkeypatch):
    """C18: PostgreSQL aborts a batch of B's main journal session to break a deadlock; B runs it again whole.

    A runs as ``actorq run``; B is a `Node` embedded in this test (the other way people run
    a node), so that a batch of B's can carry two enqueues with unique keys, the issue's own
    case. A test transaction T (``deadlock_timeout`` 10 s, so it never judges first) inserts
    a job with key k2 and waits. B enqueues two jobs, keys k1 and k2, in one batch among
    its acks and leases: B inserts k1, then waits on T for k2. T then inserts a job with
    key k1, which waits on B: a cycle, which B's server process finds after the server's
    ``deadlock_timeout`` (1 s by default) and breaks by aborting B's batch. T's insert goes
    through, and T rolls back. B's ``lock_timeout`` (3 s) leaves the detector time to act
    first. A try in which B's two enqueues did not share a batch (no deadlock) is made again
    with new keys.

    Then: B's log shows the deadlock and the batch run again; B's two jobs are its own
    (T rolled back) and succeed; every job is done once; no attempt ended in an error (no
    ack of the aborted batch was dropped); B still leads.
    """
    from actorq.journal.postgres import enqueue_in
    from actorq import Node

    caplog.set_level(logging.WARNING, logger="actorq.jobs.journal_writer")
    monkeypatch.setenv("AQTEST_RUN", "2")  # B's workers' ledger tag, as `actorq run` B would have
    with pg_admin() as admin:
        detector = admin.execute("SELECT extract(epoch FROM current_setting('deadlock_timeout')::interval)").fetchone()[0]
    assert detector < 3.0, f"the server's deadlock_timeout ({detector} s) must be below B's lock_timeout (3 s)"
    cluster = Cluster(topology, pg_schema, task_seconds=0.05, journal_b={"lock_timeout": 3.0}, interval=0.05)
    node_b = Node(cluster.topo_b.config)
    loop = asyncio.get_running_loop()
    mine: list[str] = []
    a_exit: int | None = None
    try:
        await node_b.start()
        await eventually(lambda: cluster.leader().startswith("node-b/"), timeout=60, message="node B leads")
        cluster.a = NodeProcess(cluster.topo_a, 1)
        cluster.producer.start()
        await eventually(lambda: cluster.topo_a.ledger.count() > 0 and cluster.topo_b.ledger.count() > 0,
                         timeout=60, message="both nodes ran jobs")
        sessions = NodeSessions(cluster.admin, "node-b", set)
        queue = node_b.queue()
        for attempt in range(1, 9):
            k1, k2 = f"k1-{attempt}", f"k2-{attempt}"
            with psycopg.connect(PG_URL, options="-c deadlock_timeout=10s -c lock_timeout=20s") as t:
                enqueue_in(t, [Job(TASK, [0.05], unique_key=k2).to_new_job()], schema=pg_schema)
                sent = asyncio.ensure_future(queue.enqueue_many([Job(TASK, [0.05], unique_key=k1),
                                                                 Job(TASK, [0.05], unique_key=k2)]))
                blocked = await loop.run_in_executor(None, _blocked_by, sessions, t.info.backend_pid, 5.0)
                assert blocked is not None, "B's batch never waited on the test's key"
                try:  # waits on B if B's batch holds k1; else it goes through at once
                    await loop.run_in_executor(None, enqueue_in, t, [Job(TASK, [0.05], unique_key=k1).to_new_job()],
                                               pg_schema)
                except psycopg.errors.DeadlockDetected:  # T was the victim: try again
                    pass
                t.rollback()
            mine = await sent
            if any("deadlock detected" in r.getMessage() for r in caplog.records):
                break
        else:
            raise AssertionError("B's two enqueues never shared a batch in 8 tries: no deadlock was made")
        done = cluster.count("succeeded")
        await eventually(lambda: cluster.count("succeeded") >= done + 20, timeout=60,
                         message="the nodes went on completing jobs")
        leader = cluster.leader()
        cluster.producer.stop()
        await eventually(lambda: not cluster.count_live(), timeout=60, message="every job finished")
        errors = cluster.errors()
        states = cluster.states()
    finally:
        cluster.producer.stop()
        if cluster.a is not None and cluster.a.proc.poll() is None:
            os.kill(cluster.a.pid, signal.SIGTERM)
            a_exit = await cluster.a.exit_code(timeout=60)
        await node_b.stop()
        cluster.close()
    retried = [r.getMessage() for r in caplog.records
               if "deadlock detected" in r.getMessage() and "trying it again" in r.getMessage()]
    print(f"C18: deadlock made on try {attempt}; B's log:", *retried[:3], sep="\n  ")
    assert retried, "B's log does not show the batch run again"
    # T rolled back: the keys were free again, and B's two jobs are its own
    assert len(set(mine)) == 2 and [states.get(job_id) for job_id in mine] == ["succeeded"] * 2, (mine, states)
    entries = cluster.topo_a.ledger.read() + cluster.topo_b.ledger.read()
    starts = [e for e in entries if "/start:" in e.tag]
    accepted = cluster.producer.accepted | set(mine)
    check = check_total_queue(accepted, starts, {j for j, state in states.items() if state == "succeeded"},
                              attempted=cluster.producer.attempted)
    print(check.summary())
    assert check.valid and not check.duplicated, check.summary()
    assert not errors, f"attempts ended in errors (an op of the aborted batch was dropped): {errors[:5]}"
    assert leader.startswith("node-b/"), f"B lost its leadership (leader now {leader!r})"
    assert a_exit == 0


@pytest.mark.soak  # C19 on two PostgreSQL nodes (15 s); tests/jobs/test_lease_deadline.py runs C19 by default
async def test_c19_a_resumed_node_does_not_start_prefetched_jobs_whose_lease_lapsed(topology, pg_schema):
    """C19: B resumes after a pause longer than its leases, its worker holding prefetched jobs.

    B has one worker process with 2 slots and a prefetch of 4; tasks take 0.3 s. B is
    SIGSTOPped when its worker holds jobs it has not started (and its journal session is
    outside any transaction, so nothing else holds A up). During the pause B's leases
    lapse, A takes over the leadership, rescues them and runs those jobs. After SIGCONT,
    B must not start any of the jobs it had prefetched under the lapsed leases: no job has
    a run that started after an earlier run of it had finished.
    """
    cluster = Cluster(topology, pg_schema, task_seconds=0.3, processes_b=1, prefetch_b=4, batch=3, interval=0.2)
    prefetched: set[tuple[str, int]] = set()

    def b_holds_unstarted_jobs() -> bool:
        started = {(e.job_id, e.attempt) for e in cluster.topo_b.ledger.read() if "/start:" in e.tag}
        prefetched.clear()
        prefetched.update(cluster.leased_to("node-b") - started)
        return bool(prefetched)

    try:
        await cluster.start()
        sessions = cluster.sessions_b()
        caught = catch(sessions, lambda s: s.state == "idle", cluster.halt_b, cluster.release_b,
                       confirm=b_holds_unstarted_jobs)
        try:
            window = cluster.hold(sessions, caught.session)
        finally:
            cluster.release_b()
        resumed = time.monotonic()
        # B's worker has dealt with what it held once B has started jobs it got after the pause
        await eventually(lambda: sum(1 for r in runs(cluster.topo_b.ledger.read())
                                     if r.started > resumed and (r.job_id, r.attempt) not in prefetched) >= 4,
                         timeout=60, message="node B ran new jobs after it resumed")
        errors = cluster.errors()
        outcome = await cluster.finish()
    finally:
        cluster.close()
    lapsed_runs = [r for r in outcome.runs if r.node == "2" and (r.job_id, r.attempt) in prefetched]
    twice = started_after_a_success(outcome.runs)
    ids = {job_id for job_id, _ in prefetched}
    log = cluster.b.output().splitlines() if cluster.b else []
    print(f"C19: B halted after {caught.tries} tries holding {len(prefetched)} unstarted jobs; {window}",
          outcome.summary(), sep="\n")
    print(f"lapsed prefetched jobs B started after resuming: {len(lapsed_runs)} of {len(prefetched)}")
    print(f"runs that started after an earlier run of the job had finished: {len(twice)}",
          *[f"{e.node}:{e.attempt} ended {e.ended:.2f}, then {l.node}:{l.attempt} started {l.started:.2f}"
            for e, l in twice[:6]], sep="\n  ")
    print("errors recorded for the prefetched jobs:", [e for e in errors if e[0] in ids])
    print("B's warnings after the pause:", *[line for line in log if "WARNING" in line][-8:], sep="\n  ")
    assert not lapsed_runs, (f"B started {len(lapsed_runs)} of the {len(prefetched)} jobs it had prefetched under "
                             "leases that lapsed during its pause")
    assert not twice, f"{len(twice)} jobs started again after a run of theirs had finished"
    _assert_whole_queue(outcome)
