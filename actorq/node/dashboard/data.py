"""What the dashboard reads and does: the journal's views and the node's tree, as JSON-able maps.

::

    request thread ──▶ DashboardData ──▶ its own journal connection (one call at a time, under a lock)
                                    └──▶ a NodeLink: the tree, status, cancel, pause and resume
                                         LocalNode: the node serving the dashboard, on its loop
                                         RemoteNode: a node found by its node file, or none running

Nothing here imports the web stack; `actorq.node.dashboard.app` serves these maps.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from actorq.jobs.client import Client
from actorq.journal.backends import open_journal_config
from actorq.journal.protocol import JobState, Journal
from actorq.node.cli_jobs import detail_json, summary_json
from actorq.node.control import TREE, NodeNotRunning, query, read_node_file
from actorq.node.status import ask_status
from actorq.node.views import queue_entries, schedule_entries

if TYPE_CHECKING:
    from actorq.node.config import Config

__all__ = ["DashboardData", "LocalNode", "MAX_LEASES", "MAX_PAGE", "NodeLink", "RemoteNode"]

MAX_PAGE = 200  # jobs per page of /api/jobs
DEFAULT_PAGE = 50
MAX_BREAKERS = 200  # circuit breakers /api/overview lists (one per task that declares one)
MAX_KEY_BREAKERS = 50  # per-key breakers not closed it lists (open first); "key_breaker_counts" has them all
MAX_LEASES = 200  # leased jobs /api/overview lists (grouped by owner); past it, "leases_truncated"
ERROR_CHARS = 300  # characters of a listed job's last error
MAX_SHOWN = 64 * 1024  # characters of JSON of a job's arguments or result, or of its traceback, /api/jobs/ID sends
NODE_TIMEOUT = 5.0  # seconds the dashboard waits for a node's answer

_T = TypeVar("_T")


class NodeLink(Protocol):
    """What the dashboard asks of the node serving the journal. Each call blocks (a request thread)."""

    def tree(self) -> dict[str, Any]:
        """The live supervision tree (`Node.tree`). Raises `NodeNotRunning` (why) when there is none."""

    def status(self) -> dict[str, Any]:
        """The node's counters (`Node.status`). Raises `NodeNotRunning`."""

    def cancel(self, job_id: str) -> bool:
        """Cancel a job (a running attempt is stopped where it runs); True if it was cancelled now."""

    def pause(self, queue: str, pause: bool) -> bool:
        """Pause (or resume) `queue`; True if that changed it."""


class LocalNode:
    """The node this dashboard runs in: its calls are run on the node's loop.

    Args:
        node: the `actorq.Node` (not imported here: the node imports this module).
        loop: its loop.
    """

    def __init__(self, node: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop

    def _run(self, make: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return await make()
        future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        try:
            return future.result(NODE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise NodeNotRunning(f"the node did not answer within {NODE_TIMEOUT:g} s") from None

    def tree(self) -> dict[str, Any]:
        """`Node.tree`, asked on the node's loop."""
        if self.node.stopping:
            raise NodeNotRunning("the node is stopping")
        if self.node.root is None:
            raise NodeNotRunning("the node is starting")
        return self._run(self.node.tree)  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        """`Node.status`, read on the node's loop."""
        async def status() -> dict[str, Any]:
            return self.node.status()
        return self._run(status)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> bool:
        """`Node.cancel`: a running attempt is stopped where it runs."""
        return bool(self._run(lambda: self.node.cancel(job_id)))

    def pause(self, queue: str, pause: bool) -> bool:
        """`Node.pause_queue` or `Node.resume_queue` (this node leases again at once)."""
        return bool(self._run(lambda: (self.node.pause_queue if pause else self.node.resume_queue)(queue)))


class RemoteNode:
    """The node serving a journal, found by the topology's node file (as ``actorq tree`` finds it),
    for ``actorq dashboard`` run beside it; with none running, the tree says so and the actions
    go straight to the journal (`Client`: a cancel goes through a node when one serves it).

    Args:
        config: the topology.
    """

    def __init__(self, config: "Config") -> None:
        self.config = config
        self._client: Client | None = None
        self._lock = threading.Lock()

    def _control(self) -> str:
        info = read_node_file(self.config.node_file)
        control = info.get("control")
        if not isinstance(control, str):
            raise NodeNotRunning(f"{self.config.node_file} names no control endpoint")
        return control

    def tree(self) -> dict[str, Any]:
        """The tree the running node answers over its control socket."""
        tree = query(self._control(), TREE, None, timeout=NODE_TIMEOUT)
        if not isinstance(tree, dict):
            raise NodeNotRunning("the node answered no tree")
        return tree

    def status(self) -> dict[str, Any]:
        """The running node's status over its control socket."""
        return ask_status(self._control(), NODE_TIMEOUT)

    def client(self) -> Client:
        """One client on the journal, made at the first action."""
        with self._lock:
            if self._client is None:
                self._client = Client.from_config(self.config.journal, create=False)
            return self._client

    def cancel(self, job_id: str) -> bool:
        """`Client.cancel`: through the node serving the journal when there is one."""
        return self.client().cancel(job_id)

    def pause(self, queue: str, pause: bool) -> bool:
        """`Client.pause_queue` / `resume_queue`."""
        client = self.client()
        return client.pause_queue(queue) if pause else client.resume_queue(queue)

    def close(self) -> None:
        """Close the client, if one was made."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class DashboardData:
    """The dashboard's reads and actions on one journal (a connection of its own) and one node link.

    Thread-safe: journal calls are made one at a time.

    Args:
        config: the topology (its journal and schedules).
        link: the node serving the journal (`LocalNode`, `RemoteNode`).
        clock: the time now, Unix seconds (ages and next fire times are counted from it).
    """

    def __init__(self, config: "Config", link: NodeLink, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.link = link
        self.clock = clock
        self._journal: Journal | None = None
        self._lock = threading.Lock()

    def _with_journal(self, fn: Callable[[Journal], _T]) -> _T:
        with self._lock:
            if self._journal is None:
                self._journal = open_journal_config(self.config.journal, create=False,
                                                    application_name="actorq dashboard", purpose="dashboard")
            return fn(self._journal)

    def close(self) -> None:
        """Close the journal connection (and the link's client). Idempotent."""
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
        close = getattr(self.link, "close", None)
        if close is not None:
            close()

    # -- reads -------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        """Everything the page shows but the jobs: the node, its tree, the queues, the leases by
        owner, the schedules and the circuit breakers (the tasks', and the per-key ones not closed)."""
        now = self.clock()
        tree: dict[str, Any] | None = None
        status: dict[str, Any] | None = None
        problem = None
        try:
            tree = self.link.tree()
            status = self.link.status()
        except NodeNotRunning as exc:
            problem = str(exc)

        def read(journal: Journal) -> tuple[Any, ...]:
            return (queue_entries(journal, now), journal.list_jobs(state=JobState.LEASED, limit=MAX_LEASES + 1),
                    journal.schedules(), journal.breakers(), journal.key_breakers(MAX_KEY_BREAKERS))
        queues, leased, rows, breakers, (key_breakers, key_counts) = self._with_journal(read)
        owners: dict[str, list[dict[str, Any]]] = {}
        for job in leased[:MAX_LEASES]:
            owners.setdefault(job.lease_owner or "?", []).append({"id": job.id, "task": job.task, "queue": job.queue,
                                                                 "attempts": job.attempts})
        return {"now": now, "journal": self.config.journal.describe(), "node_name": self.config.node.name,
                "node": status, "tree": tree, "node_problem": problem, "queues": queues,
                "leases": [{"owner": owner, "jobs": jobs} for owner, jobs in sorted(owners.items())],
                "leases_truncated": len(leased) > MAX_LEASES,
                "schedules": schedule_entries(self.config, rows, now),
                "breakers": [b._asdict() for b in breakers[:MAX_BREAKERS]],
                "key_breakers": [b._asdict() for b in key_breakers], "key_breaker_counts": key_counts}

    def jobs(self, *, state: JobState | None, queue: str | None, task: str | None, after: str | None,
             limit: int) -> dict[str, Any]:
        """A keyset page of jobs in id order (`Journal.list_jobs`) and the cursor of the next."""
        page = self._with_journal(lambda j: j.list_jobs(state=state, queue=queue, task=task, after=after,
                                                         limit=limit))
        jobs = []
        for job in page:
            entry = summary_json(job)
            if entry["last_error"] and len(entry["last_error"]) > ERROR_CHARS:
                entry["last_error"] = entry["last_error"][: ERROR_CHARS - 1] + "…"
            jobs.append(entry)
        return {"jobs": jobs, "next": page[-1].id if len(page) == limit else None}

    def job(self, job_id: str) -> dict[str, Any] | None:
        """Everything the journal keeps of one job (`Journal.inspect`, as ``jobs show --json``), or None."""
        detail = self._with_journal(lambda j: j.inspect(job_id))
        if detail is None:
            return None
        shown = detail_json(detail)
        for keys, problem in ((("args", "kwargs"), "payload_problem"), (("result",), "result_problem")):
            size = sum(len(json.dumps(shown[key])) for key in keys)
            if size > MAX_SHOWN:
                for key in keys:
                    shown[key] = None
                shown[problem] = (f"{size:,} characters of JSON: too large to show here "
                                  f"(actorq jobs show ID --json prints it)")
        traceback = shown["last_traceback"]
        if traceback and len(traceback) > MAX_SHOWN:
            shown["last_traceback"] = f"[{len(traceback) - MAX_SHOWN:,} characters left out]\n" + traceback[-MAX_SHOWN:]
        return shown

    # -- actions: (done, what came of it) ------------------------------------------------------
    def _left(self, job_id: str, why: Callable[[str], str]) -> tuple[bool | None, str]:
        info = self._with_journal(lambda j: j.get(job_id))
        if info is None:
            return None, "no such job"
        return False, why(str(info.state))

    def retry(self, job_id: str) -> tuple[bool | None, str]:
        """Retry a dead or failed job with fresh attempts. Returns (True, ...), (False, why not) or
        (None, "no such job")."""
        if self._with_journal(lambda j: j.retry_dead(job_id)):
            return True, "retried: ready, with fresh attempts"
        return self._left(job_id, lambda state: f"is {state}, not dead or failed: left as it is")

    def cancel(self, job_id: str) -> tuple[bool | None, str]:
        """Cancel a job that has not finished (through the node: a running attempt is stopped)."""
        if self.link.cancel(job_id):
            return True, "cancelled"
        return self._left(job_id, lambda state: f"had already finished ({state}): nothing to cancel")

    def pause(self, queue: str, pause: bool) -> tuple[bool, str]:
        """Pause or resume a queue on every node of the journal."""
        changed = self.link.pause(queue, pause)
        if pause:
            return changed, "paused" if changed else "was already paused"
        return changed, "resumed" if changed else "was not paused"
