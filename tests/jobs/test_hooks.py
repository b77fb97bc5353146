"""Hooks: around each job in real worker processes, and node events from a real node."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter

import pytest

from actorq import Job, Node, TaskRegistry
from actorq.jobs.events import EVENTS, EventHub, HooksConfig, NodeEvent, load_hook
from actorq.node.config import ConfigError, parse_config
from actorq.testing import eventually

TASKS = """
class Timing:
    def before(self, job):
        record("mw-before")

    def after(self, job, outcome):
        record(f"mw-after|{outcome}")


registry.add_middleware(Timing())


@registry.before
def first(job):
    assert current_job().id == job.id
    record(f"before|{job.task}")


@registry.before
def broken_before(job):
    raise RuntimeError("a broken before hook")


@registry.on_failure
async def failed(job, error):
    await asyncio.sleep(0)
    record(f"on_failure|{type(error).__name__}")


@registry.after
def after(job, outcome):
    record(f"after|{outcome}")
    raise SystemExit("a broken after hook never ends the worker")


@registry.task("h.ok")
async def ok():
    record("run")


@registry.task("h.sync_ok")
def sync_ok():
    record("run")


@registry.task("h.flaky", max_attempts=2, retry=RetryPolicy(base=0.0, jitter=0.0))
def flaky():
    record("run")
    raise ValueError("always")


NODE_EVENTS = []


def node_hook(event):
    NODE_EVENTS.append(event)
"""


def notes(topo, job_id: str) -> list[str]:
    return [e.tag.split("/", 2)[2] for e in topo.ledger.read() if e.job_id == job_id]


async def test_worker_hooks_run_around_each_attempt_and_never_fail_it(topology):
    topo = topology(TASKS, processes=1)
    async with Node(topo.config) as node:
        queue = node.queue()
        ok = await queue.enqueue(Job("h.ok"))
        sync_ok = await queue.enqueue(Job("h.sync_ok"))
        flaky = await queue.enqueue(Job("h.flaky"))
        counts = await node.wait_idle(timeout=60)
        assert node.runtime.worker_restarts == 0  # a hook's SystemExit ended no worker
    assert counts["default"] == {"succeeded": 2, "dead": 1}
    # before: in registration order (the middleware first); after: in reverse
    for job_id, task in ((ok, "h.ok"), (sync_ok, "h.sync_ok")):
        assert notes(topo, job_id) == ["mw-before", f"before|{task}", "run", "after|ok", "mw-after|ok"]
    attempt = ["mw-before", "before|h.flaky", "run", "on_failure|ValueError", "after|raised", "mw-after|raised"]
    assert notes(topo, flaky) == attempt * 2


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_node_events_match_the_journal(request, topology, backend):
    if backend == "sqlite":
        topo = topology(TASKS, processes=2)
    else:
        from journal_support import PG_URL  # tests/journal, on sys.path (tests/conftest.py)

        topo = topology(TASKS, processes=2, journal_url=PG_URL, schema=request.getfixturevalue("pg_schema"))
    seen: list[NodeEvent] = []
    lock = threading.Lock()

    def collect(event: NodeEvent) -> None:
        with lock:
            seen.append(event)

    def broken(event: NodeEvent) -> None:
        raise RuntimeError("a broken node hook")

    node = Node(topo.config)
    node.on("*", collect)
    node.on("succeeded", broken)
    async with node:
        queue = node.queue()
        ok_ids = [await queue.enqueue(Job("h.ok")) for _ in range(10)]
        flaky = await queue.enqueue(Job("h.flaky"))
        parked = await queue.enqueue(Job("h.ok", delay=3600))
        assert await node.cancel(parked)
        await node.wait_idle(timeout=60)
        hub = node.runtime.events
    kinds = Counter(e.kind for e in seen)
    assert kinds == Counter({"enqueued": 12, "started": 12, "succeeded": 10, "retried": 1, "dead": 1,
                             "cancelled": 1, "worker_started": 2, "worker_exited": 2})
    assert {e.job_id for e in seen if e.kind == "succeeded"} == set(ok_ids)
    dead = next(e for e in seen if e.kind == "dead")
    assert (dead.job_id, dead.task, dead.attempt) == (flaky, "h.flaky", 2)
    assert "ValueError: always" in (dead.error or "")
    assert all(e.task == "h.ok" and e.queue == "default" and e.run_time is not None
               for e in seen if e.kind == "succeeded")  # filled in from its start on this node
    assert all(e.queue_wait is not None and e.queue_wait >= 0 for e in seen if e.kind == "started")
    retried = next(e for e in seen if e.kind == "retried")
    assert retried.ready_at is not None and retried.ready_at >= retried.at - 1  # its retry time (no backoff)
    assert hub.hook_errors == Counter({"succeeded": 10})  # the others' hooks went on
    assert hub.dropped == 0


async def test_a_slow_node_hook_blocks_neither_the_node_nor_its_jobs(topology):
    topo = topology(TASKS, processes=1)
    config = dataclasses.replace(topo.config, hooks=HooksConfig(buffer=5))
    release = threading.Event()
    delivered: list[str] = []

    def slow(event: NodeEvent) -> None:
        release.wait(60)
        delivered.append(event.kind)

    node = Node(config)
    node.on("*", slow)
    async with node:
        queue = node.queue()
        for _ in range(30):
            await queue.enqueue(Job("h.ok"))
        counts = await node.wait_idle(timeout=60)  # the loop ran on while the hook was stuck
        assert counts["default"] == {"succeeded": 30}
        hub = node.runtime.events
        assert hub.dropped > 0
        release.set()
    # every event was either handed to the hook or dropped and counted
    assert len(delivered) + hub.dropped == 1 + 3 * 30 + 1  # worker started, 30 jobs, worker exited


async def test_node_hooks_from_the_topology_file(topology):
    topo = topology(TASKS, processes=1)
    config = dataclasses.replace(topo.config, hooks=HooksConfig(node=(f"{topo.tasks_module}:node_hook",)))
    async with Node(config) as node:
        job_id = await node.queue().enqueue(Job("h.ok"))
        await node.wait_idle(timeout=60)
    import importlib
    module = importlib.import_module(topo.tasks_module)
    assert [e.kind for e in module.NODE_EVENTS if e.job_id == job_id] == ["enqueued", "started", "succeeded"]

    broken = dataclasses.replace(topo.config, hooks=HooksConfig(node=(f"{topo.tasks_module}:missing",)))
    with pytest.raises(ConfigError, match=rf"hooks.node: hook '{topo.tasks_module}:missing': .* is not a function"):
        await Node(broken).start()


def test_registration_errors():
    node = Node(parse_config({}))
    with pytest.raises(ValueError, match="unknown node event 'finished'"):
        node.on("finished", print)
    with pytest.raises(TypeError):
        node.on("succeeded", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="has none of the methods"):
        TaskRegistry(middleware=[object()])
    with pytest.raises(ImportError, match="expected 'module:function'"):
        load_hook("no_colon")
    with pytest.raises(ConfigError, match=r"hooks.buffer: expected an integer from 1 to 1000000"):
        parse_config({"hooks": {"buffer": 0}}, source="t.toml")
    assert set(EVENTS) >= {"enqueued", "started", "succeeded", "retried", "failed", "dead", "cancelled",
                           "worker_started", "worker_exited", "restart"}


def test_hub_counts_what_it_cannot_hold():
    hub = EventHub(buffer=2)
    hub.emit([NodeEvent("enqueued", "a")])  # no hook, no timing: nothing is kept
    assert hub.dropped == 0 and not hub.active
    gate = threading.Event()
    got: list[str] = []
    hub.on("enqueued", lambda e: (gate.wait(10), got.append(e.job_id)))
    hub.emit([NodeEvent("enqueued", "b")])
    hub.emit([NodeEvent("enqueued", str(i)) for i in range(10)])
    gate.set()
    hub.close()
    assert len(got) + hub.dropped == 11 and hub.dropped >= 8
