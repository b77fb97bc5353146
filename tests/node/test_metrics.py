"""The Prometheus endpoint of a real node: scraped over HTTP, parsed, checked against the journal."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys
import urllib.error
import urllib.request

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from actorq import Job, Node
from actorq.node.config import ConfigError, parse_config
from actorq.node.metrics import MetricsConfig, is_loopback, parse_bind
from actorq.testing import eventually

TASKS = """
@registry.task("m.ok")
async def ok(n):
    return None


@registry.task("m.flaky", max_attempts=2, retry=RetryPolicy(base=0.0, jitter=0.0))
def flaky():
    raise RuntimeError("always")


@registry.task("m.discard")
def discard():
    raise Discard("no")
"""


def _scrape(address: tuple[str, int]) -> dict[str, list]:
    """GET /metrics and parse it: {family name: [(sample name, labels, value), ...]}."""
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def _value(families: dict[str, list], sample: str, **labels: str) -> float:
    family = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum").removesuffix("_bucket")
    return sum(v for name, got, v in families[family] if name == sample and labels.items() <= got.items())


async def scrape(node: Node) -> dict[str, list]:
    assert node.metrics is not None
    return await asyncio.get_running_loop().run_in_executor(None, _scrape, node.metrics.address)


def with_metrics(topo, **settings) -> object:
    return dataclasses.replace(topo.config, metrics=MetricsConfig(bind="127.0.0.1:0", **settings))


def backend_topology(request, topology, backend: str, **settings):  # noqa: ANN001, ANN201
    """A topology on SQLite, or on a fresh PostgreSQL schema."""
    if backend == "sqlite":
        return topology(TASKS, **settings)
    from journal_support import PG_URL  # tests/journal, on sys.path (tests/conftest.py)

    return topology(TASKS, journal_url=PG_URL, schema=request.getfixturevalue("pg_schema"), **settings)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_metrics_of_a_real_node_match_its_journal(request, topology, backend):
    topo = backend_topology(request, topology, backend, processes=2)
    async with Node(with_metrics(topo)) as node:
        await eventually(lambda: node.runtime.dispatcher.worker_count == 2, timeout=30, message="workers up")
        queue = node.queue()
        for i in range(20):
            await queue.enqueue(Job("m.ok", [i]))
        for _ in range(3):
            await queue.enqueue(Job("m.flaky"))
        for _ in range(2):
            await queue.enqueue(Job("m.discard"))
        parked = await queue.enqueue(Job("m.ok", [0], delay=3600))
        assert await node.cancel(parked)
        counts = await node.wait_idle(timeout=60)
        families = await scrape(node)  # the first scrape reads the journal's counts

    node_label = {"node": topo.config.node.name}
    for queue_name, states in counts.items():
        for state, n in states.items():
            assert _value(families, "actorq_jobs", queue=queue_name, state=state, **node_label) == n
    assert counts["default"] == {"succeeded": 20, "dead": 3, "failed": 2, "cancelled": 1}
    # the journal's last minute of the queue: 26 jobs finished in 60-70 s, 28 leases waited
    assert 26 / 70 <= _value(families, "actorq_queue_finished_per_second", queue="default") <= 26 / 60
    assert _value(families, "actorq_queue_wait_mean_seconds", queue="default") >= 0
    assert _value(families, "actorq_jobs_enqueued_total") == 26
    assert _value(families, "actorq_jobs_succeeded_total") == 20
    assert _value(families, "actorq_attempts_failed_total") == 3 * 2 + 2
    assert _value(families, "actorq_jobs_retried_total") == 3
    assert _value(families, "actorq_jobs_dead_total") == 3
    assert _value(families, "actorq_jobs_failed_total") == 2
    assert _value(families, "actorq_jobs_cancelled_total") == 1
    assert _value(families, "actorq_stale_acks_total") == 0
    assert _value(families, "actorq_worker_restarts_total") == 0
    assert _value(families, "actorq_workers") == 2
    # every attempt started here and ended: one run time each, in the queue's histogram
    assert _value(families, "actorq_job_run_seconds_count", queue="default") == 20 + 6 + 2
    assert _value(families, "actorq_job_run_seconds_bucket", queue="default", le="+Inf") == 28
    # every attempt became due through this node (enqueued, or retried) before it started
    assert _value(families, "actorq_job_queue_wait_seconds_count", queue="default") == 28
    commits = _value(families, "actorq_journal_commits_total")
    assert commits > 0
    assert _value(families, "actorq_journal_commit_seconds_count") == commits
    assert _value(families, "actorq_journal_group_ops_count") == commits
    assert _value(families, "actorq_journal_group_ops_sum") == _value(families, "actorq_journal_ops_total")


async def test_malformed_frames_and_restarts_show_by_socket_and_reason(topology):
    topo = topology(TASKS, processes=1)
    node = Node(with_metrics(topo, counts_every=3600.0))
    worker_events: list[tuple[str, int]] = []
    for kind in ("worker_started", "worker_exited", "restart"):
        node.on(kind, lambda event: worker_events.append((event.kind, event.pid)))
    async with node:
        await eventually(lambda: node.runtime.dispatcher.worker_count == 1, timeout=30, message="worker up")
        ctx = zmq.Context.instance()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(node.endpoint)
        control = ctx.socket(zmq.DEALER)
        control.setsockopt(zmq.LINGER, 0)
        control.connect(node.control.endpoint)
        try:
            dealer.send(b"not a frame")
            control.send(b"not a request")
            await eventually(lambda: sum(node.runtime.dispatcher.stats.malformed.values()) >= 1
                             and node.control.dropped.total >= 1, timeout=30, message="both sockets counted")
        finally:
            dealer.close()
            control.close()
        pid = node.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: node.runtime.worker_restarts == 1 and node.runtime.dispatcher.worker_count == 1,
                         timeout=30, message="the worker was replaced")
        families = await scrape(node)
        reasons = {labels["reason"]: v for name, labels, v in families["actorq_malformed_frames"]
                   if labels["socket"] == "dispatcher"}
        assert reasons == dict(node.runtime.dispatcher.stats.malformed)
        assert sum(reasons.values()) >= 1
        control_reasons = {labels["reason"]: v for name, labels, v in families["actorq_malformed_frames"]
                           if labels["socket"] == "control"}
        assert control_reasons == dict(node.control.dropped.by_reason) and sum(control_reasons.values()) >= 1
        assert _value(families, "actorq_worker_restarts_total") == 1
        await node.queue().enqueue(Job("m.ok", [1]))
        again = await scrape(node)  # counts_every is an hour: the cached counts, not a new read
        assert again["actorq_jobs"] == families["actorq_jobs"]
        replacement = node.worker_pids()[0]
        held = [node.metrics._scrapes.acquire(blocking=False) for _ in range(4)]  # 4 scrapes under way
        assert all(held)
        with pytest.raises(urllib.error.HTTPError, match="500"):  # a fifth fails at once
            await scrape(node)
        for _ in held:
            node.metrics._scrapes.release()
        assert "actorq_jobs" in await scrape(node)
    assert worker_events == [("worker_started", pid), ("worker_exited", pid), ("worker_started", replacement),
                             ("restart", replacement), ("worker_exited", replacement)]


def test_bind_must_be_loopback_unless_allowed():
    with pytest.raises(ConfigError, match=r"t.toml: metrics.bind: 0.0.0.0 is not a loopback address"):
        parse_config({"metrics": {"bind": "0.0.0.0:9108"}}, source="t.toml")
    config = parse_config({"metrics": {"bind": "0.0.0.0:9108", "allow_remote": True}}, source="t.toml")
    assert config.metrics.bind == "0.0.0.0:9108"
    for bad in ("9108", "host:", "host:65536", ":9108", "h:-1", 9108):
        with pytest.raises(ConfigError, match=r"t.toml: metrics.bind: expected"):
            parse_config({"metrics": {"bind": bad}}, source="t.toml")
    with pytest.raises(ConfigError, match=r"metrics.counts_every: expected a number from 0.1 to 3600"):
        parse_config({"metrics": {"counts_every": 0}}, source="t.toml")
    assert parse_bind("[::1]:0") == ("::1", 0)
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")


@pytest.mark.parametrize("missing", ["prometheus_client", "uvicorn"])
async def test_missing_prometheus_client_or_uvicorn_is_one_line_naming_the_key(topology, monkeypatch, missing):
    topo = topology(TASKS)
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else 1)
    node = Node(with_metrics(topo))
    with pytest.raises(ConfigError) as caught:
        await node.start()
    assert str(caught.value) == (f"{topo.toml_path}: metrics.bind: serving metrics needs prometheus-client and "
                                 "uvicorn: pip install 'actorq[metrics]'")
    assert node.runtime is None  # refused before anything started


async def test_a_port_in_use_is_a_config_error(topology):
    topo = topology(TASKS, processes=1)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        node = Node(dataclasses.replace(topo.config, metrics=MetricsConfig(bind=f"127.0.0.1:{port}")))
        with pytest.raises(ConfigError, match=rf"metrics.bind: cannot serve metrics at 127.0.0.1:{port}: "):
            await node.start()
        assert node.worker_pids() == [] and node.root is None  # said before any process started
    finally:
        taken.close()


def test_actorq_runs_without_prometheus_client(tmp_path):
    """The core imports and loads a topology without prometheus-client (blocked from importing)."""
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import actorq, actorq.node.node, actorq.node.cli\n"
            "from actorq.node.config import parse_config\n"
            "print(parse_config({'metrics': {'bind': '127.0.0.1:9108'}}).metrics.bind)\n")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "127.0.0.1:9108\n"
