"""PostgreSQL: what one node gets done while another node on its schema is halted inside a transaction.

Two real ``actorq run`` nodes, A and B, share a fresh schema (leases of
``--lease-timeout`` s, leadership TTL ``--leader-ttl`` s; B starts first, so B
leads the rescue duty) while a producer thread in this script commits
``--rate`` no-op jobs a second through ``actorq.Client``. Then, for each fault:

1. **before**: ``--window`` seconds with both nodes running;
2. **the halt**: the script polls ``pg_stat_activity`` in a tight loop until B's
   main journal session (``application_name`` ``actorq bench-b journal``, or
   else the session on one of B's own client ports) is *idle in transaction*
   holding row locks, for the first ``--prefer-leadership`` seconds only right
   after B renewed its leadership (the leaders row is then locked: the worst
   moment for the other node, whose own renewal waits on it), then halts B and
   looks again (if the session moved on meanwhile, B is resumed and the script
   tries again):

   - ``pause``: SIGSTOP to B's process group (the node and its workers);
   - ``cut``: B's journal URL points at a TCP proxy in this script, which stops
     forwarding either way with every socket left open (a network cut that
     neither side notices);

3. **during**: ``--window`` seconds of that, watching whether the server ends
   B's session (``idle_in_transaction_session_timeout``) and so its locks, and
   how many sessions wait on them;
4. **after**: B resumes (SIGCONT, or the proxy forwards again), the producer
   stops, and the queue drains.

For each fault it prints the jobs stored as succeeded before and during the
halt, read from the journal (while B is halted it can commit nothing, so every
success stored then is A's), A's share before (from its once-a-second progress
lines), what happened to B's session, the drain, and the totals. Nothing is
checked against a figure: the tests in tests/node/test_pg_cluster_faults.py
assert; this measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the fault helpers the tests use

import bench_e2e  # noqa: E402  (puts the repository on sys.path and imports actorq)
from bench_nodes import BenchError, NodeRun, add_node_options, parse_postgres_args, run_or_exit  # noqa: E402

import actorq  # noqa: E402
from actorq.journal import migrate  # noqa: E402
from pg_faults import Caught, Halt, NodeSessions, SteadyProducer, catch, client_ports, watch  # noqa: E402
from tcp_proxy import TcpProxy  # noqa: E402

TASK = "bench.noop"  # bench_tasks.py: an async no-op
FAULTS = ("pause", "cut")
PROGRESS_EVERY = 2.0  # seconds between progress lines on stderr

EPILOG = """\
examples:
  python bench/bench_pg_pause.py postgresql://postgres@127.0.0.1:5432/postgres
  python bench/bench_pg_pause.py postgresql://postgres@127.0.0.1:5432/postgres --fault pause --window 20
  python bench/bench_pg_pause.py postgresql://postgres@127.0.0.1:5432/postgres --rate 500 --lease-timeout 8

Each fault runs on a fresh schema (bench_<pid>_<hex>) with a temporary directory for the
nodes' topology files and logs; both are removed afterwards, also on Ctrl-C or failure (B is
resumed and both nodes are stopped first). The role in the URL needs CREATE on the database
and must see other sessions in pg_stat_activity (a superuser or pg_read_all_stats).
Progress goes to stderr (--quiet: none); results go to stdout. A node's logs are printed
when it fails. Figures on shared machines vary by +-20-40 %.
"""


@dataclass
class Result:
    """What one fault did to the queue."""

    fault: str
    window: float
    before_total: int
    """Successes stored in the `window` s before the halt, by both nodes."""
    before_a: int
    """A's share of them, from its progress lines (once a second)."""
    during: int
    """Successes stored while B was halted: all A's."""
    caught: Caught
    halt: Halt
    drain_seconds: float
    accepted: int
    succeeded: int


def _address(url: str) -> tuple[str, int]:
    params = conninfo_to_dict(url)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


def _through_proxy(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's (user, password and database kept)."""
    scheme, rest = url.split("://", 1)
    credentials, _, location = rest.rpartition("@")
    database = location.split("/", 1)[1] if "/" in location else ""
    return f"{scheme}://{credentials + '@' if credentials else ''}127.0.0.1:{port}/{database}"


def _topology(name: str, url: str, schema: str, args: argparse.Namespace) -> str:
    return (
        "[node]\n"
        f"name = {json.dumps(name)}\n"
        'tasks = ["bench_tasks:registry"]\n'
        'log_level = "warning"\n'
        f"leader_ttl = {args.leader_ttl!r}\n"
        "[journal]\n"
        f"url = {json.dumps(url)}\n"
        f"schema = {json.dumps(schema)}\n"
        "[dispatcher]\n"
        f"lease_timeout = {args.lease_timeout!r}\n"
        "[workers]\n"
        f"processes = {args.processes}\n"
        f"concurrency = {args.concurrency}\n"
        f"prefetch = {args.concurrency}\n"
    )


class _Journal:
    """The few reads the script makes, on one autocommit connection (it also watches sessions)."""

    def __init__(self, conn: Any, schema: str) -> None:
        self.conn = conn
        self.jobs = f'"{schema}".actorq_jobs'
        self.leaders = f'"{schema}".actorq_leaders'

    def succeeded(self) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {self.jobs} WHERE state = 'succeeded'").fetchone()[0]

    def live(self) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {self.jobs}"
                                 " WHERE state IN ('ready', 'leased', 'scheduled', 'retry')").fetchone()[0]

    def leader(self) -> str:
        row = self.conn.execute(f"SELECT holder FROM {self.leaders} WHERE name = 'rescue'").fetchone()
        return row[0] if row else ""


def _wait(what: str, condition: Callable[[], bool], nodes: list[NodeRun], deadline: float) -> None:
    while not condition():
        for node in nodes:
            node.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within the --timeout")
        time.sleep(0.1)


def _last_count(node: NodeRun) -> int:
    lines = node.lines()
    return lines[-1][0] if lines else 0


def run_fault(args: argparse.Namespace, fault: str) -> Result:
    """One fault on a fresh schema; everything it started or created is gone when it returns."""
    say = (lambda text: print(f"  [{fault}] {text}", file=sys.stderr, flush=True)) if args.progress else (
        lambda text: None)
    host, port = _address(args.url)
    with contextlib.ExitStack() as cleanup:  # callbacks run in reverse: B resumes and nodes stop before the schema goes
        workdir = Path(tempfile.mkdtemp(prefix="actorq-pause-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        schema = cleanup.enter_context(bench_e2e.fresh_schema(args.url))
        migrate(args.url, schema)
        shutil.copy2(HERE / "bench_tasks.py", workdir / "bench_tasks.py")  # the nodes' workers import it
        proxy = cleanup.enter_context(contextlib.closing(TcpProxy((host, port)))) if fault == "cut" else None
        url_b = _through_proxy(args.url, proxy.port) if proxy else args.url
        nodes: list[NodeRun] = []

        def stop_nodes() -> None:
            if proxy is not None:
                proxy.thaw()
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(node.proc.pid, signal.SIGCONT)
                node.terminate()  # all at once, then wait for each
            for node in nodes:
                node.stop()

        cleanup.callback(stop_nodes)
        journal = _Journal(cleanup.enter_context(psycopg.connect(args.url, autocommit=True)), schema)
        deadline = time.monotonic() + args.timeout
        b = NodeRun.launch(workdir, "bench-b", _topology("bench-b", url_b, schema, args))
        nodes.append(b)
        _wait("node B leads", lambda: journal.leader().startswith("bench-b/"), nodes, deadline)
        a = NodeRun.launch(workdir, "bench-a", _topology("bench-a", args.url, schema, args))
        nodes.append(a)
        producer = SteadyProducer(args.url, schema, lambda: actorq.Job(TASK), batch=max(1, round(args.rate / 10)),
                                  interval=0.1).start()
        cleanup.callback(producer.stop)
        _wait("both nodes ran jobs with all their workers", lambda: a.warmed(args.processes) and b.warmed(args.processes),
              nodes, deadline)
        say(f"both nodes running (B leads), producer at ~{args.rate} jobs/s; measuring {args.window:g} s before")

        stored, a_count = journal.succeeded(), _last_count(a)
        time.sleep(args.window)
        before_total, before_a = journal.succeeded() - stored, _last_count(a) - a_count

        assert b.proc is not None
        b_pid = b.proc.pid
        if proxy is not None:
            sessions = NodeSessions(journal.conn, "bench-b", proxy.upstream_ports)
            halt, release = proxy.freeze, proxy.thaw
        else:
            sessions = NodeSessions(journal.conn, "bench-b", lambda: client_ports(b_pid, port))
            halt, release = (lambda: os.killpg(b_pid, signal.SIGSTOP)), (lambda: os.killpg(b_pid, signal.SIGCONT))
        try:
            caught = catch(sessions, lambda s: s.holds_row_locks, halt, release,
                           prefer=lambda s: s.renewed_leadership, prefer_for=args.prefer_leadership)
        except AssertionError as exc:
            raise BenchError(str(exc)) from None
        say(f"B halted ({fault}) after {caught.tries} tries: session {caught.session.pid} idle in transaction, "
            f"{_moment(caught)}")
        try:
            stored = journal.succeeded()

            def tick(elapsed: float, so_far: Halt) -> None:
                state = "ended by the server" if so_far.ended_after is not None else "still idle in transaction"
                say(f"{elapsed:4.1f} s into the halt: {journal.succeeded() - stored:,} successes stored; "
                    f"B's session {state}, {so_far.most_waiting} sessions waited on it at most")

            halted = watch(sessions, caught.session.pid, args.window, tick=tick, tick_every=PROGRESS_EVERY)
            during = journal.succeeded() - stored
        finally:
            release()
        say("B resumed; stopping the producer and draining")
        producer.stop()
        drain_start = time.monotonic()
        _wait("the queue drained", lambda: journal.live() == 0, nodes, drain_start + args.timeout)
        drain_seconds = time.monotonic() - drain_start
        return Result(fault, args.window, before_total, before_a, during, caught, halted, drain_seconds,
                      len(producer.accepted), journal.succeeded())


def _moment(caught: Caught) -> str:
    return "right after renewing its leadership" if caught.session.renewed_leadership else "holding other row locks"


def describe(r: Result) -> str:
    """One line for one fault."""
    session = (f"ended by the server after {r.halt.ended_after:.1f} s" if r.halt.ended_after is not None
               else "still idle in transaction when B resumed")
    return (f"{r.fault:<5}: before, both nodes, {r.window:g} s: {r.before_total:,} jobs stored "
            f"(A ~{r.before_a:,} by its progress lines) | during, B halted {r.window:g} s: A stored {r.during:,} "
            f"({r.during / r.window:,.0f} jobs/s) | B's session {r.caught.session.pid} (caught idle in transaction "
            f"{_moment(r.caught)}, after {r.caught.tries} tries): {session}, {r.halt.most_waiting} sessions waited "
            f"on it at most | after: drained in {r.drain_seconds:.1f} s; "
            f"{r.accepted:,} jobs accepted, {r.succeeded:,} succeeded")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", metavar="postgresql://URL", help="the database; each fault uses a fresh schema in it")
    parser.add_argument("--fault", choices=(*FAULTS, "both"), default="both",
                        help="pause (SIGSTOP node B), cut (freeze B's TCP proxy), or both, one after the other "
                             "(default both)")
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds measured before the halt, and seconds B stays halted (default 10: past the "
                             "lease timeout, so B's leases lapse meanwhile)")
    parser.add_argument("--prefer-leadership", type=float, default=10.0, metavar="SECONDS",
                        help="for this long, halt B only right after it renewed its leadership; then at any "
                             "moment it holds row locks (default 10; 0: any moment from the start)")
    parser.add_argument("--rate", type=int, default=200,
                        help="jobs a second the producer commits, in ten commits a second (default 200)")
    parser.add_argument("--lease-timeout", type=float, default=4.0,
                        help="dispatcher.lease_timeout of both nodes, seconds (default 4)")
    parser.add_argument("--leader-ttl", type=float, default=2.0,
                        help="node.leader_ttl of both nodes, seconds (default 2: A takes the rescue duty over "
                             "from the halted B within the window)")
    add_node_options(parser, concurrency=16, timeout=120.0, waits="a wait (start, drain)")
    return parser


def main() -> None:
    """Run the chosen faults and print one line each."""
    run_or_exit(run_faults, parse_postgres_args(build_parser()))


def run_faults(args: argparse.Namespace) -> None:
    """The faults of `main`, with their output."""
    cpus = os.cpu_count() or 0
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | {cpus} CPUs | "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"journal {bench_e2e.postgres_facts(args.url)} | a fresh schema per fault")
    print(f"workload: ~{args.rate} async no-op jobs/s from one producer thread (actorq.Client) | 2 nodes "
          f"(`actorq run`), each {args.processes} worker processes x {args.concurrency} slots | lease timeout "
          f"{args.lease_timeout:g} s, leader TTL {args.leader_ttl:g} s | node B leads and is halted")
    for fault in (FAULTS if args.fault == "both" else (args.fault,)):
        print(describe(run_fault(args, fault)), flush=True)


if __name__ == "__main__":
    main()
