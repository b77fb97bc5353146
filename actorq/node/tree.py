"""The node's supervision tree: which actor does what, and how each is restarted.

::

    node                       root supervisor    [supervision] strategy (one_for_one)
    ├── core                   supervisor         [supervision] core_strategy (rest_for_one)
    │   ├── journal-writer     actor: owns the journal on its thread; group commit
    │   ├── dispatcher         actor: ROUTER socket; leases for workers; collects acks
    │   ├── scheduler          actor: promotes due jobs, wakes the dispatcher
    │   ├── listener           actor (journals that notify: PostgreSQL): wakes the dispatcher
    │   ├── leader             actor: this node's claim on duties that run once (rescue)
    │   └── producers          actor: ROUTER socket; other processes' enqueues through the writer
    └── workers                supervisor         simple_one_for_one (the dynamic pool)
        └── worker × processes OS processes (actorq.jobs.worker), permanent

The roles and the worker processes are the job runtime's (`actorq.jobs.runtime`);
this module only gives them their supervisors.

Why this shape:

* ``core`` is ``rest_for_one`` because each role holds the one before it: the
  dispatcher submits to the writer it was started with, the scheduler to both.
  A new writer therefore means a new dispatcher and scheduler; a new
  dispatcher means a new scheduler; a scheduler restart touches nothing else.
* Workers are *not* under ``core``. They depend on the dispatcher's address,
  not on its incarnation: a restarted dispatcher binds the same endpoint, the
  workers' sockets reconnect, and each worker re-announces the jobs it holds
  (the dispatcher reclaims the rest of that worker's leases). So a dispatcher
  or writer crash costs no worker restart and no running job.
* The root is ``one_for_one`` over the two: a pool that exceeds its restart
  intensity (workers crash-looping) is restarted by the root without touching
  the journal writer, up to the root's own intensity; past that the node stops
  and ``actorq run`` exits 1 (OTP escalation).
* Stop order is the reverse of start order: the worker pool first (each
  worker gets SIGTERM, finishes its running jobs within
  ``workers.shutdown_timeout`` and sends its last acks to the still-running
  dispatcher), then the scheduler, the dispatcher, and last the writer, which
  commits everything it was given.
"""

from __future__ import annotations

import os
from typing import Any

from actorq.jobs.runtime import JobRuntime
from actorq.jobs.settings import WorkersConfig
from actorq.node.config import SupervisionConfig
from actorq.supervisors import (
    ActorChild,
    Backoff,
    ChildSpec,
    SupervisorRef,
    SupFlags,
    current_system,
    start_supervisor,
    supervisor_spec,
)

__all__ = ["build_tree", "describe"]

NODE, CORE, WORKERS = "node", "core", "workers"


def build_tree(runtime: JobRuntime, supervision: SupervisionConfig,
               workers: WorkersConfig) -> tuple[SupFlags, list[ChildSpec]]:
    """The root supervisor's flags and children for `runtime` (see the module docstring)."""
    core = supervisor_spec(CORE, SupFlags(supervision.core_strategy, supervision.core_intensity,
                                          supervision.core_period), runtime.core_children(), name=CORE)
    backoff = Backoff(workers.restart_backoff, cap=max(30.0, workers.restart_backoff)) if workers.restart_backoff else None
    pool_flags = SupFlags("simple_one_for_one", workers.intensity, workers.period, backoff=backoff)
    worker = runtime.worker_child()

    async def start_pool() -> ActorChild:
        system = current_system()
        ref = await start_supervisor(system, pool_flags, [worker], name=WORKERS, on_child_exit=runtime.worker_exited)
        assert isinstance(ref, SupervisorRef)
        try:
            for _ in range(workers.processes):
                await ref.start_child(())
        except BaseException:
            await ref.stop()
            raise
        return ActorChild(system, ref.ref, supervisor=ref)

    pool = ChildSpec(WORKERS, start_pool, type="supervisor")
    return SupFlags(supervision.strategy, supervision.intensity, supervision.period), [core, pool]


async def describe(root: SupervisorRef, name: str, supervision: SupervisionConfig, stopping: bool) -> dict[str, Any]:
    """The live tree under `root` as nested maps (what ``actorq tree`` prints).

    Args:
        root: the node's root supervisor.
        name: the node's name.
        supervision: the strategies the supervisors were built with.
        stopping: whether the node is stopping.
    """
    strategies = {NODE: supervision.strategy, CORE: supervision.core_strategy, WORKERS: "simple_one_for_one"}

    async def children(sup: SupervisorRef) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for info in await sup.which_children():
            item: dict[str, Any] = {
                "id": info.id, "type": info.type, "restart": info.restart, "state": info.state,
                "restarts": info.restarts, "kind": "process" if isinstance(info.pid, int) else "actor",
                "pid": info.pid if isinstance(info.pid, int) else None, "children": [],
            }
            if info.supervisor is not None:
                item["strategy"] = strategies.get(info.id, "")
                if info.state == "running":
                    item["children"] = await children(info.supervisor)
            out.append(item)
        return out

    return {"id": NODE, "name": name, "type": "supervisor", "strategy": strategies[NODE],
            "kind": "actor", "pid": os.getpid(), "state": "stopping" if stopping else "running",
            "restarts": 0, "children": await children(root)}
