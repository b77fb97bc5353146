"""`Client`: add jobs from any process: through the node that serves the journal, or straight into it.

For producers outside the node (a web app, a cron script, ``actorq enqueue``).
Every call returns only once its jobs are committed, so a returned id means
*accepted*.

- **SQLite with a node running on the file** (its node file, ``<journal>.node``,
  names a live process and a producer endpoint): the jobs go to the node
  (`actorq.jobs.producers`), which commits them in its own group commits and
  wakes its dispatcher at once. The client never takes the file's write lock,
  so it neither starves the node nor meets "database is locked" beside other
  producers. A call waits at most `timeout` seconds; a node that dies or stops
  meanwhile, or stays busy, gives `NotCommitted`, and sending the same jobs
  again (same ids) adds none twice.
- **SQLite with no node running**, or one embedded in the client's own process
  (whose loop a blocking call could stall; use ``node.queue()`` there): the
  client writes into the file itself, waiting up to ``busy_timeout`` for its
  write lock; the node finds the jobs at its scheduler's next tick, or when it starts.
  ``via_node=False`` asks for this even while a node serves the file.
- **PostgreSQL**: the client writes into the journal itself (one autocommit
  INSERT a call); the commit's NOTIFY wakes every node's listener.
- **Any journal, with** ``node_endpoint``: the jobs go to the node serving that
  producer endpoint (its ``[producers] endpoint``), as above for SQLite, and
  never into the journal directly.

Which is faster on PostgreSQL was measured (``bench/bench_producers.py
--postgres``; docs/architecture.md, "Producers on PostgreSQL"): one job per
call, each producer waiting for its commit, beside a node with 2 worker
processes on a 2-core machine, durable jobs/s direct / through the node: 1
producer 704 / 244, 4 producers 735 / 763, 8 producers 583 / 1,282, 16
producers 551 / 1,882. Direct wins with few producers (its INSERT runs in the
producer's own server backend, while a node's writer is also committing
leases and acks), and is the default. But every commit that NOTIFYs takes one
cluster-wide lock in PostgreSQL, so direct producers commit one at a time:
past a few concurrent producers, adding more adds only waiting (up to the
client's `timeout`), while through the node one group
commit carries all their jobs. Many concurrent producers should use
``node_endpoint``.

Waiting for a result (`Client.result`) and cancelling (`Client.cancel`) go to the
same node when enqueues do, which answers a wait when the job's completion commits
and stops a cancelled job at once; on PostgreSQL without a node, a wait is woken by
the NOTIFY of the transaction that ended the job, and a cancel's NOTIFY reaches every
node. Either way a slow poll of the journal remains as the fallback.

A job's task decides its queue, priority and attempts unless the producer sets
them (`actorq.Task`). The client learns each task's declaration from the
registry it is given, or else from the journal's task catalog, which every node
writes when it starts; a task neither knows gets the defaults.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import zmq

from actorq.errors import NotCommitted, QueueFull
from actorq.jobs import backpressure
from actorq.jobs import producers
from actorq.jobs.journal_writer import discarded_ids
from actorq.jobs.node_file import NodeNotRunning, alive, listener_pid, node_file_beside, read_node_file
from actorq.jobs.settings import producers_endpoint_problem
from actorq.jobs.task import DEFAULT_MAX_PAYLOAD, Declared, Job, TaskRegistry, check_name
from actorq.jobs.wire import MAX_NAME_CHARS
from actorq.jobs.results import (
    POLL_FIRST, PUSHED_POLL, DoneWatch, discarded, next_read, outcome_value, time_left, timed_out,
)
from actorq.journal import open_journal
from actorq.journal.config import (
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CONNECT_RETRY_FOR, DEFAULT_SCHEMA, DEFAULT_SYNCHRONOUS, DEFAULT_URL, SQLITE_PREFIX,
    JournalConfig,
)
from actorq.journal.protocol import (
    TERMINAL_STATES, BreakerState, JobInfo, JobResult, NewJob, QueueLimits, QueueStats,
)
from actorq.transports.codec import FrameError

logger = logging.getLogger(__name__)

__all__ = ["Client"]

DECLARATIONS_TTL = 10.0
"""Seconds a client trusts a task declaration it read from the journal's task catalog."""
DEFAULT_TIMEOUT = 30.0  # seconds a call waits for the node's answer
POLL_SLICE = 0.1  # while waiting, how often the node's process is looked for (a dead node answers nothing)
BUSY_FIRST_DELAY, BUSY_MAX_DELAY = 0.005, 0.2  # backoff after a BUSY answer
MAX_RESULT_POLL = 86_400.0
WAIT_GRACE = 2.0  # seconds past a WAIT's own timeout its answer may take to arrive


# a QueueFull as the node's producer endpoint answers it (`producers` sends "<type>: <message>")
_QUEUE_FULL = re.compile(r"QueueFull: queue '(?P<queue>[^']*)' is full: (?P<depth>\d+) waiting jobs, max_depth (?P<limit>\d+)")

class Client:
    """A synchronous producer on a journal URL; safe to share between threads.

    On SQLite, while a node runs on the file in another process, enqueues go through
    that node (its producer endpoint); with no node, they are written into the file.
    On PostgreSQL they are written into the journal, whose NOTIFY wakes the nodes:
    the default, measured the faster with one producer (704 against 244 jobs/s through
    a node) and even with four (735 against 763). With `node_endpoint` they go through
    the node listening there, on any journal: on PostgreSQL the faster from about 8
    concurrent producers (1,882 against 551 jobs/s at 16), because PostgreSQL commits
    notifying transactions one at a time (see the module docstring). Reads (`get`,
    `counts`) always read the journal.

    Args:
        url: the journal, e.g. ``sqlite:///actorq.db`` or ``postgresql://user@host/db``.
        synchronous: SQLite durability level (``full`` by default).
        busy_timeout: SQLite: seconds to wait for the node's write lock.
        schema: PostgreSQL: the journal's schema (default ``actorq``).
        connect_retry_for: PostgreSQL: seconds an unreachable server is retried (default 30).
        tasks: the task registry (or ``{name: declaration}``) whose declared queue,
            priority and attempts apply to jobs of its tasks; without it the journal's
            task catalog (written by nodes at start) is asked, at most once every
            `DECLARATIONS_TTL` seconds per task.
        create: False: a journal that does not exist yet is an error instead of being
            created (for a client that only reads).
        timeout: seconds one call may wait for a node's answer (through a node), or, writing
            into PostgreSQL, for a lock (many producers committing at once queue on the
            server's NOTIFY lock).
        via_node: False: on SQLite, always write into the file directly, even while a node
            serves it (then each call takes the file's write lock beside the node, as with
            no node running); True (default): through the node whenever one serves the file.
        node_endpoint: a node's fixed producer endpoint (its ``[producers] endpoint``,
            ``ipc:///abs/path`` or ``tcp://127.0.0.1:PORT``): every enqueue goes to that node,
            on any journal, and never into the journal directly; with no node listening
            there, a call raises `NotCommitted` at once. None (default): as described above.
            `result` and `cancel` go to the node too (whenever enqueues would), falling
            back to the journal when it cannot take them.
        result_poll: seconds between `result`'s fallback reads of the journal while it is
            pushed (PostgreSQL's done channel): default `PUSHED_POLL` (2 s), at most a day.

    Raises:
        JournalError: the journal cannot be opened (or, with `create` False, does not exist).
        ValueError: `timeout` is not a positive finite number of seconds; `node_endpoint` is
            no ipc:// or loopback tcp:// endpoint, or is given with `via_node` False.
    """

    def __init__(self, url: str = DEFAULT_URL, *, synchronous: str = DEFAULT_SYNCHRONOUS,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT, schema: str = DEFAULT_SCHEMA,
                 connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR,
                 tasks: TaskRegistry | Mapping[str, Declared] | None = None, create: bool = True,
                 timeout: float = DEFAULT_TIMEOUT, via_node: bool = True, node_endpoint: str | None = None,
                 result_poll: float = PUSHED_POLL) -> None:
        if not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a positive finite number of seconds, got {timeout!r}")
        if not (isinstance(result_poll, (int, float)) and 0 < result_poll <= MAX_RESULT_POLL):
            raise ValueError(f"result_poll must be seconds > 0 and at most {MAX_RESULT_POLL:g}, got {result_poll!r}")
        self.result_poll = float(result_poll)
        """Seconds between `result`'s fallback reads of the journal while it is pushed."""
        self._url = url
        self._schema = schema
        self._watch: DoneWatch | None = None
        self._watch_lock = threading.Lock()
        self._wait_links: list[_NodeLink] = []  # idle links for WAIT and CANCEL (one request each at a time)
        if node_endpoint is not None:
            if not via_node:
                raise ValueError("node_endpoint sends every enqueue through a node; via_node=False forbids that")
            problem = producers_endpoint_problem(node_endpoint) if node_endpoint else "expected an endpoint, got ''"
            if problem:
                raise ValueError(f"node_endpoint: {problem}")
        self._node_endpoint = node_endpoint
        self._endpoint_node: dict[str, Any] | None = None  # the node found listening at node_endpoint
        # PostgreSQL: a producer's insert waits for locks up to its own timeout, not a node's short
        # lock_timeout (meant for row locks another node holds): many producers committing at once
        # queue on the server's NOTIFY lock, and failing them for it would lose nothing but work
        self._journal = open_journal(url, synchronous=synchronous, busy_timeout=busy_timeout, schema=schema,
                                     connect_retry_for=connect_retry_for, create=create, lock_timeout=timeout)
        self._tasks: Mapping[str, Declared] | None = tasks.policies() if isinstance(tasks, TaskRegistry) else tasks
        self._catalog: dict[str, Declared] = {}  # the task catalog's declarations read so far
        self._catalog_read: dict[str, float] = {}  # task name -> when its declaration was read
        self._node_file: Path | None = None
        self._node_seen: tuple[tuple[int, int, int], dict[str, Any]] | None = None  # (file's stat, its contents)
        if via_node and url.startswith(SQLITE_PREFIX):
            self._node_file = node_file_beside(JournalConfig(url=url).sqlite_path)
        self._timeout = timeout
        self._lock = threading.Lock()  # one request at a time on the link
        self._link: _NodeLink | None = None

    @classmethod
    def from_config(cls, config: JournalConfig, *, tasks: TaskRegistry | Mapping[str, Declared] | None = None,
                    create: bool = True, node_endpoint: str | None = None) -> "Client":
        """A client on the journal a ``[journal]`` section describes, with every setting of it
        a client uses (a relative SQLite path is the CWD's).

        Raises:
            JournalError, ValueError: as the constructor.
        """
        return cls(config.resolved_url, synchronous=config.synchronous, busy_timeout=config.busy_timeout,
                   schema=config.schema, connect_retry_for=config.connect_retry_for, tasks=tasks, create=create,
                   node_endpoint=node_endpoint)

    def enqueue(self, job: Job, queue: str | None = None, *, block: float = 0.0) -> str | None:
        """Commit one job and return its id (accepted).

        Args:
            job: the job.
            queue: the queue; None (default): its task's declared queue.
            block: seconds to wait for room when the queue is at its ``max_depth``
                (sending again after short sleeps); 0 (default): raise at once.

        Raises:
            TypeError: an argument cannot be encoded (names the argument).
            ValueError: the job is invalid (a bad name, arguments over the node's frame).
            NotCommitted: through a node: it refused the job, stayed busy, stopped or gave
                no answer within `timeout` (``maybe_committed`` is then set); send it again.
            QueueFull: its queue stayed at its ``max_depth`` for `block` seconds (docs/flow-control.md).
            JournalError: the commit failed; the job was not accepted (re-send is safe).
        """
        return self.enqueue_many([job], queue, block=block)[0]

    def enqueue_many(self, jobs: Sequence[Job], queue: str | None = None, *, block: float = 0.0) -> list[str | None]:
        """Commit several jobs and return their ids, in order.

        Written directly, they commit in one transaction; through a node, in requests
        of at most 1,000 jobs and one frame of arguments each. For a job whose
        `unique_key` is held (by a live job, or by one inside its ``unique_for`` period),
        nothing is added and the id returned is the holder's. For a job with
        ``on_conflict="discard"`` whose `concurrency_key` already has its limit of live
        jobs, nothing is added and None is returned in its place.

        Raises:
            As `enqueue`; some jobs may be committed when it raises: sending them all
            again adds none twice (and those committed take no room in a full queue).
        """
        tries = backpressure.pauses(backpressure.check_block(block))
        while True:
            try:
                return self._enqueue_many(jobs, queue)
            except QueueFull:
                pause = next(tries, None)
                if pause is None:
                    raise
                time.sleep(pause)

    def _enqueue_many(self, jobs: Sequence[Job], queue: str | None) -> list[str]:
        declared = self._declared({job.task for job in jobs})
        node = self._node() if jobs else None
        if node is not None:
            max_payload = node.get("max_payload")
            if type(max_payload) is not int or max_payload <= 0:
                max_payload = DEFAULT_MAX_PAYLOAD
            rows = [job.to_new_job(queue, max_payload, declared=declared.get(job.task)) for job in jobs]
            with self._lock:
                return self._through_node(node, rows, max_payload)
        rows = [job.to_new_job(queue, declared=declared.get(job.task)) for job in jobs]
        keys = [row.unique_key for row in rows if row.unique_key is not None]
        discarding = [row for row in rows if row.discard_over_limit]
        if not keys and not discarding:  # one statement (PostgreSQL: one round trip)
            self._journal.enqueue(rows)
            return [row.id for row in rows]
        with self._journal.transaction():
            self._journal.enqueue(rows)
            holders = self._journal.holders(keys) if keys else {}
            discarded = discarded_ids(self._journal, discarding)
        return [None if row.id in discarded else holders.get(row.unique_key, row.id) if row.unique_key else row.id
                for row in rows]

    def _node(self) -> dict[str, Any] | None:
        """The node file of a live node serving this journal with a producer endpoint, or None."""
        if self._node_endpoint is not None:
            return self._node_at_endpoint(self._node_endpoint)
        if self._node_file is None:
            return None
        try:  # read again only when the file changed (a node started); its process is checked each call
            st = os.stat(self._node_file)
        except OSError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        seen = self._node_seen
        if seen is not None and seen[0] == stamp:
            info = seen[1]
            if not alive(info["pid"]):
                return None
        else:
            try:
                info = read_node_file(self._node_file)
            except NodeNotRunning:
                return None
            self._node_seen = (stamp, info)
        if info["pid"] == os.getpid():  # an embedded node: waiting for it here could block its own loop
            return None
        endpoint = info.get("producers")
        return info if isinstance(endpoint, str) and endpoint.startswith(("ipc://", "tcp://")) else None

    def _node_at_endpoint(self, endpoint: str) -> dict[str, Any]:
        """`node_endpoint`'s node, as a node file would describe it: the process listening there
        (looked for again only once the one found before is gone).

        Raises:
            NotCommitted: no process listens at `endpoint`, or it cannot be told whose it is.
        """
        node = self._endpoint_node
        if node is None or not alive(node["pid"]):
            try:
                pid = listener_pid(endpoint)
            except NodeNotRunning as exc:
                raise NotCommitted(f"{exc}; the jobs were not committed") from None
            if pid is None:
                raise NotCommitted(f"no node listens at {endpoint}; the jobs were not committed: "
                                   "send them again once it runs")
            # the node's own payload budget is in no file here: the default frame's (a node with
            # a smaller dispatcher.max_frame_bytes drops a larger request, and the call times out)
            node = self._endpoint_node = {"pid": pid, "producers": endpoint, "max_payload": DEFAULT_MAX_PAYLOAD}
        return node

    def _through_node(self, node: dict[str, Any], rows: list[NewJob], max_payload: int) -> list[str | None]:
        deadline = time.monotonic() + self._timeout
        link = self._link
        if link is None or link.endpoint != node["producers"] or link.pid != node["pid"]:
            if link is not None:
                link.close()
            link = self._link = _NodeLink(node["producers"], node["pid"])
        ids: list[str | None] = []
        try:
            for chunk in _chunks(rows, max_payload):
                ids.extend(link.send(chunk, deadline, self._timeout))
        except NotCommitted as exc:
            if exc.maybe_committed:  # late answers to it are of no use: start afresh
                link.close()
                self._link = None
            raise
        return ids

    def _declared(self, names: set[str]) -> Mapping[str, Declared]:
        """The declarations of `names`: the registry's, or the task catalog's, read at most once
        every `DECLARATIONS_TTL` seconds per task (nodes rewrite it only when they start)."""
        if self._tasks is not None:
            return self._tasks
        now = time.monotonic()
        stale = sorted(n for n in names if self._catalog_read.get(n, -DECLARATIONS_TTL) <= now - DECLARATIONS_TTL)
        if stale:
            found = self._journal.declared_tasks(stale)
            for name in stale:
                self._catalog_read[name] = now
                if name in found:
                    self._catalog[name] = found[name]
                else:
                    self._catalog.pop(name, None)
            if len(self._catalog_read) > 10_000:  # bounded: a client sending many task names
                self._catalog_read.clear()
        return self._catalog

    def ask(self, job: Job, queue: str | None = None, *, timeout: float = 10.0) -> Any:
        """Enqueue `job`, wait for it to end, and return what its task returned: `enqueue`
        then `result` under one deadline (as a node's `QueueRef.ask`).

        The job is durable once the enqueue returns; a timeout leaves it running (fetch its
        result later by id with `result`). A job with a held `unique_key` is not added: the
        job holding the key is waited for instead.

        Raises:
            NotCommitted: the job was discarded over its concurrency key's limit.
            JobFailed: the job ended dead, failed or cancelled.
            AskTimeout: it did not end within `timeout`, counted from the call.
            QueueFull, JournalError: as `enqueue`.
        """
        check_wait(timeout)
        deadline = time.monotonic() + timeout
        job_id = self.enqueue(job, queue)
        if job_id is None:
            raise discarded(job)
        return self.result(job_id, time_left(deadline, job_id, timeout))

    def result(self, job_id: str, timeout: float = 10.0) -> Any:
        """Wait for the job `job_id`, enqueued earlier by anyone, to end; return what its task returned.

        Pushed where it can be, polled where it cannot:

        - through a node (the one enqueues go to: `node_endpoint`, or on SQLite the node
          serving the file): the node waits (a WAIT request, see `actorq.jobs.producers`) and
          answers when the job's completion commits there, or when another node's reaches
          its fallback read; a node that is busy (too many waits), stopping or gone leaves
          the rest of the wait to the journal;
        - on PostgreSQL: reads the journal, woken by the NOTIFY of the transaction that ended
          the job (`DoneWatch`), and reads it again every `result_poll` seconds in case a
          notification was missed;
        - else (SQLite, no node): reads the journal, at once and then with a backoff doubling
          from `POLL_FIRST` to `POLL_MAX` seconds.

        Works for as long as the result is kept (``[results] ttl``), also after the process
        that enqueued the job restarted.

        Args:
            job_id: the job's id (as `enqueue` returned it).
            timeout: seconds to wait (> 0).

        Returns:
            The task's return value, decoded from msgpack (None when it returned None or
            keeps no results).

        Raises:
            JobFailed: the job ended dead, failed or cancelled (the remote error's type,
                message and traceback text).
            ResultExpired: it succeeded, but its result is no longer kept.
            AskTimeout: it did not end within `timeout`, or no such job is in the journal.
            JournalError: the journal cannot be read.
        """
        check_wait(timeout)
        deadline = time.monotonic() + timeout
        answered, outcome = self.wait_via_node(job_id, deadline)
        if not answered:
            outcome = self._wait_in_journal(job_id, deadline)
        if outcome is None or outcome.state not in TERMINAL_STATES:
            raise timed_out(job_id, timeout, outcome)
        return outcome_value(outcome)

    def _wait_in_journal(self, job_id: str, deadline: float) -> JobResult | None:
        """Read the job's outcome until it is final or `deadline` (`time.monotonic`) passes."""
        watch = self.done_watch()
        woken = threading.Event()
        token = watch.add(job_id, woken.set) if watch is not None else None  # before the first read
        delay = POLL_FIRST
        try:
            while True:
                woken.clear()  # a notification from here on wakes the wait below
                outcome = self.outcome(job_id)
                if outcome is not None and outcome.state in TERMINAL_STATES:
                    return outcome
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return outcome
                wait, delay = next_read(watch, self.result_poll, delay, remaining)
                woken.wait(wait)
        finally:
            if watch is not None and token is not None:
                watch.remove(token)

    def done_watch(self) -> DoneWatch | None:
        """The listener that wakes this client's result waiters (PostgreSQL; started at the first
        call), or None: the journal does not notify. Thread-safe."""
        if not getattr(self._journal, "notifies", False):
            return None
        with self._watch_lock:
            if self._watch is None:
                watch = DoneWatch(self._url, self._schema)
                watch.start()
                self._watch = watch
            return self._watch

    def wait_via_node(self, job_id: str, deadline: float) -> tuple[bool, JobResult | None]:
        """Wait in the node enqueues go to for the job's end, until `deadline` (`time.monotonic`).

        Returns:
            ``(True, outcome)``: the node answered for the whole wait: the final outcome, or
            at the deadline the job's live state (None: unknown). ``(False, None)``: no node
            can take the wait now (none, busy, stopping or gone): read the journal.
        """
        node = self._node_or_none()
        if node is None:
            return False, None
        link = self._take_link(node)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, None  # the journal's one read says where the job is
                request_id = next(link.request_ids)
                kind, body = link.ask(producers.encode_wait(request_id, job_id, remaining), request_id,
                                      deadline + WAIT_GRACE)
                if kind != producers.OUTCOME:
                    logger.debug("producers: the node did not wait for job %s (%s); reading the journal", job_id, body)
                    self._give_link(link)
                    return False, None
                outcome = producers.read_outcome(job_id, body)
                if outcome is not None and outcome.state in TERMINAL_STATES:
                    self._give_link(link)
                    return True, outcome
                if time.monotonic() < deadline - 0.01:  # answered before its time: let the journal go on
                    self._give_link(link)
                    return False, None
        except (NotCommitted, FrameError) as exc:  # no answer, the node gone, or a bad one
            logger.debug("producers: no outcome of job %s from the node (%s); reading the journal", job_id, exc)
            link.close()
            return False, None

    def _node_or_none(self) -> dict[str, Any] | None:
        try:
            return self._node()
        except NotCommitted:  # nothing listens at node_endpoint
            return None

    def _take_link(self, node: dict[str, Any]) -> "_NodeLink":
        with self._watch_lock:
            while self._wait_links:
                link = self._wait_links.pop()
                if link.endpoint == node["producers"] and link.pid == node["pid"]:
                    return link
                link.close()
        return _NodeLink(node["producers"], node["pid"])

    def _give_link(self, link: "_NodeLink") -> None:
        with self._watch_lock:
            if len(self._wait_links) < 8:
                self._wait_links.append(link)
                return
        link.close()

    def outcome(self, job_id: str) -> JobResult | None:
        """Read the job's state and outcome once, without waiting (`Journal.result`); None if unknown."""
        return self._journal.result(job_id)

    def get(self, job_id: str) -> JobInfo | None:
        """Return one job's state and recorded errors, or None."""
        return self._journal.get(job_id)

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {state: count}}``, from the counts the journal keeps (no pass over the jobs)."""
        return self._journal.counts()

    def queue_stats(self, window: float = 60.0) -> dict[str, QueueStats]:
        """What each queue did over the last `window` seconds (10 to 3600): jobs finished and
        failed, leases and their queue wait (`Journal.queue_stats`).

        Raises:
            ValueError: `window` out of its range.
        """
        return self._journal.queue_stats(window)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not finished (scheduled, ready, running or waiting to retry).

        The job ends ``cancelled`` in the journal at once. A running job's lease is void
        from then on: its worker's later answer is rejected (fenced), so it neither
        succeeds nor retries. The node holding it is told at once (through the node
        enqueues go to, which commits the cancel; on PostgreSQL by the cancel's NOTIFY),
        or else within a second (it polls the jobs it holds), and stops it: an async task gets `asyncio.CancelledError`; a sync
        task sees ``current_job().cancelled`` and, past ``workers.cancel_grace``, its
        process is replaced (see docs/timeouts.md).

        Returns:
            True if it was cancelled now; False if it had already finished or no such
            job exists (`get` tells which).

        Raises:
            JournalError: the journal could not be written.
        """
        if not isinstance(job_id, str) or not job_id:
            return False
        node = self._node_or_none()
        if node is not None and len(job_id) <= MAX_NAME_CHARS:
            link = self._take_link(node)
            request_id = next(link.request_ids)
            try:
                kind, body = link.ask(producers.encode_cancel(request_id, job_id), request_id,
                                      time.monotonic() + self._timeout)
            except (NotCommitted, FrameError) as exc:
                logger.debug("producers: the node did not answer the cancel of job %s (%s)", job_id, exc)
                link.close()
            else:
                self._give_link(link)
                if kind == producers.CANCELLED:
                    return bool(body)
        # no node, or it could not take it: into the journal (its node notices at its next poll,
        # or at once on PostgreSQL, whose cancel NOTIFYs every node)
        return self._journal.cancel(job_id)

    def pause_queue(self, queue: str) -> bool:
        """Pause `queue` on every node serving this journal: none leases its jobs until
        `resume_queue`; jobs already running finish. Enqueueing into it still works.

        Returns:
            True if it was running, False if it was already paused.

        Raises:
            ValueError: `queue` is not a valid queue name.
            JournalError: the journal could not be written.
        """
        check_name("queue name", queue)
        return self._journal.pause_queue(queue)

    def resume_queue(self, queue: str) -> bool:
        """Let `queue` lease again (the nodes see it at their next poll).

        Returns:
            True if it was paused, False if it was not.

        Raises:
            ValueError: `queue` is not a valid queue name.
            JournalError: the journal could not be written.
        """
        check_name("queue name", queue)
        return self._journal.resume_queue(queue)

    def paused_queues(self) -> list[str]:
        """The names of the paused queues, sorted."""
        return self._journal.paused_queues()

    def queue_limits(self) -> dict[str, QueueLimits]:
        """``{queue: its limits}`` as the journal stores them (``[queues.NAME]`` of the nodes'
        files: `concurrency` and `max_depth`; `node_concurrency` is each node's own, None here)."""
        return self._journal.queue_limits()

    def breakers(self) -> list[BreakerState]:
        """Where each task's circuit breaker stands, as the journal holds it (every node's)."""
        return self._journal.breakers()

    def key_breakers(self, limit: int = 20) -> tuple[list[BreakerState], dict[str, int]]:
        """The per-key circuit breakers (``key_circuit_breaker``) not closed: at most `limit` of
        them, open ones first, and how many there are by state (``{"open": n, "half_open": m}``)."""
        return self._journal.key_breakers(limit)

    def close(self) -> None:
        """Close the journal connection and the node link. Idempotent."""
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None
        with self._watch_lock:
            watch, self._watch = self._watch, None
            links, self._wait_links = self._wait_links, []
        for link in links:
            link.close()
        if watch is not None:
            watch.stop()
        self._journal.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_wait(timeout: object) -> None:
    """Refuse a `result` timeout that is not a number of seconds > 0 (ValueError)."""
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout < math.inf):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")


def _chunks(rows: list[NewJob], max_payload: int) -> list[list[NewJob]]:
    """`rows` cut into requests of at most `MAX_JOBS_PER_REQUEST` jobs and `max_payload` bytes of arguments."""
    chunks: list[list[NewJob]] = [[]]
    size = 0
    for row in rows:
        if chunks[-1] and (len(chunks[-1]) >= producers.MAX_JOBS_PER_REQUEST or size + len(row.payload) > max_payload):
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += len(row.payload)
    return chunks


class _NodeLink:
    """A DEALER socket to one node's producer endpoint; used under the client's lock."""

    _request_ids = itertools.count(1)
    request_ids = _request_ids

    def __init__(self, endpoint: str, pid: int) -> None:
        self.endpoint = endpoint
        self.pid = pid
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, producers.MAX_REPLY_BYTES)
        self._sock.setsockopt(zmq.RCVHWM, producers.QUEUED_PER_PEER)
        self._sock.setsockopt(zmq.SNDHWM, producers.QUEUED_PER_PEER)
        self._sock.connect(endpoint)
        self._poll_items = [(self._sock, zmq.POLLIN)]  # zmq_poll's argument (Socket.poll builds a Poller each call)

    def close(self) -> None:
        self._sock.close(linger=0)

    def send(self, rows: list[NewJob], deadline: float, timeout: float) -> list[str | None]:
        """Send one request, again after each BUSY answer, until it is answered or `deadline` passes."""
        delay = BUSY_FIRST_DELAY
        while True:
            request_id = next(self._request_ids)
            try:
                self._sock.send(producers.encode_request(request_id, rows), zmq.NOBLOCK)
            except zmq.Again:
                why = "its queue from this client is full"
            else:
                kind, body = self._answer(request_id, deadline, timeout)
                if kind == producers.ENQUEUED:
                    return self._ids(rows, body)
                why = body
            if time.monotonic() + delay > deadline:
                raise NotCommitted(f"the node (pid {self.pid}) stayed busy for {timeout:g} s ({why}); "
                                   "the jobs were not committed: send them again")
            time.sleep(delay)
            delay = min(delay * 2, BUSY_MAX_DELAY)

    def ask(self, frame: bytes, request_id: int, deadline: float) -> tuple[str, Any]:
        """Send one WAIT or CANCEL request and return its answer's ``(kind, body)``.

        Raises:
            NotCommitted: it could not be sent, or no answer came by `deadline`, or the node died.
        """
        try:
            self._sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            raise NotCommitted("the node's queue from this client is full") from None
        return self._answer(request_id, deadline, max(0.0, deadline - time.monotonic()))

    def _answer(self, request_id: int, deadline: float, timeout: float) -> tuple[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotCommitted(
                    f"no answer from the node (pid {self.pid}) within {timeout:g} s; the jobs may or may not "
                    "be committed: send them again (same ids) to be sure", maybe_committed=True)
            if not zmq.zmq_poll(self._poll_items, int(min(left, POLL_SLICE) * 1000) + 1):
                if not alive(self.pid):
                    raise NotCommitted(
                        f"the node (pid {self.pid}) ended before answering; the jobs may or may not be "
                        "committed: send them again (same ids) to be sure", maybe_committed=True)
                continue
            try:
                kind, answered, body = producers.parse_reply(self._sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                continue
            except FrameError as exc:
                logger.warning("producers: dropped a malformed answer from the node (%s)", exc)
                continue
            if answered == request_id:  # else the late answer to a request given up on
                return kind, body

    @staticmethod
    def _ids(rows: list[NewJob], results: list[producers.Result]) -> list[str | None]:
        if len(results) != len(rows):
            raise NotCommitted(f"the node answered {len(results)} results for {len(rows)} jobs",
                               maybe_committed=True)
        for row, result in zip(rows, results):
            if not result.ok:
                full = _QUEUE_FULL.fullmatch(result.text)
                if full:  # the node's journal refused it at the queue's max_depth: the same error as direct
                    raise QueueFull(full["queue"], int(full["depth"]), int(full["limit"]))
                raise NotCommitted(f"job {row.id} not committed: {result.text}")
        return [result.text for result in results]
