"""Rules in the lease, end to end: real nodes and worker processes (docs/rate-limits-and-breakers.md).

The bucket's arithmetic is the journal contract's (tests/journal/test_journal_rules_contract.py, on an
injected clock); here a real node must keep leasing a rated queue as its tokens come, with
nothing else to wake it: the scheduler's poll is set to a minute, and completions do not wake
a queue without a concurrency. No timing is asserted.
"""

from __future__ import annotations

import json

import pytest

from actorq import Job, Node
from actorq.node.cli import _ProgressPrinter
from actorq.node.cli import main as cli_main
from actorq.node.config import ConfigError, parse_config

TASKS = """
@registry.task("rules.call", queue="api")
def call(n):
    ctx = current_job()
    ledger.record(ctx.id, ctx.attempt, tag="start")
"""


async def test_a_rated_queue_is_leased_again_when_its_next_token_is_due(topology, capsys) -> None:
    # 30 jobs, 2 tokens at most at once: 14 or more leases must wait for a token; with a poll of
    # a minute, only the dispatcher's wake at the next token gets them done within the timeout
    topo = topology(TASKS, processes=1, concurrency=4, queues=("api",), poll_interval=60.0,
                    queue_limits={"api": {"rate": "40/s", "burst": 2}})
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([Job("rules.call", [n]) for n in range(30)])
        counts = await node.wait_idle(timeout=30)
    assert counts == {"api": {"succeeded": 30}}
    assert len(topo.ledger.read()) == 30
    # the journal holds the rate: `actorq status` shows it
    assert cli_main(["status", "--config", str(topo.toml_path), "--timeout", "0.2"]) == 0
    assert "queue api: rate 40/s (burst 2) (docs/flow-control.md)" in capsys.readouterr().out.splitlines()
    assert cli_main(["status", "--config", str(topo.toml_path), "--json", "--timeout", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["limits"] == {"api": {"rate": "40/s", "burst": 2}}
    assert cli_main(["check", "--config", str(topo.toml_path)]) == 0
    assert "    api: rate 40/s (burst 2)" in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("table, message", [
    ({"api": {"rate": "100/d"}}, "queues.api.rate: expected a rate 'COUNT/UNIT' (COUNT from 1 to 1000000000, "
                                 "UNIT s, m or h, e.g. '100/m'), got '100/d'"),
    ({"api": {"rate": 100}}, "queues.api.rate: expected a rate 'COUNT/UNIT'"),
    ({"api": {"rate": "0/s"}}, "queues.api.rate: expected a rate"),
    ({"api": {"rate": "10/s", "burst": 0}}, "queues.api.burst: expected an integer from 1 to 1000000000, got 0"),
    ({"api": {"rate": "10/s", "burst": "5"}}, "queues.api.burst: expected an integer"),
    ({"api": {"burst": 5}}, "queues.api.burst: a burst needs a rate in the same table"),
    ({"api": {"rates": "10/s"}}, "queues.api.rates: unknown key; did you mean 'rate'?"),
])
def test_rate_and_burst_are_validated_with_file_and_key(table, message) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"queues": table}, source="topology.toml")
    assert str(caught.value).startswith(f"topology.toml: {message}")
    assert "\n" not in str(caught.value)


RULED = """
@registry.task("rules.slow", queue="shared", concurrency=2)
async def slow(path):
    ctx = current_job()
    own = Ledger(path)
    own.record(ctx.id, ctx.attempt, tag="start")
    await asyncio.sleep(0.02)
    own.record(ctx.id, ctx.attempt, tag="end")


@registry.task("rules.quick", queue="shared")
def quick():
    ledger.record(current_job().id, 1)
"""


def most_at_once(entries) -> int:
    running = peak = 0
    for entry in entries:
        running += 1 if entry.tag == "start" else -1
        peak = max(peak, running)
    return peak


async def test_a_task_s_concurrency_holds_across_worker_processes(topology, tmp_path, capsys) -> None:
    from actorq.testing import Ledger

    # 2 processes x 4 slots: 8 could run at once; completions (not the minute's poll) lease the next
    topo = topology(RULED, processes=2, concurrency=4, queues=("shared",), poll_interval=60.0)
    runs = Ledger(tmp_path / "runs.txt")
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([Job("rules.slow", [str(runs.path)]) for _ in range(16)]
                                        + [Job("rules.quick") for _ in range(10)])
        counts = await node.wait_idle(timeout=60)
    assert counts == {"shared": {"succeeded": 26}}
    assert len(runs.read()) == 32 and len(topo.ledger.read()) == 10
    assert most_at_once(runs.read()) == 2  # the task's limit, reached and never passed
    assert cli_main(["check", "--config", str(topo.toml_path)]) == 0
    assert "concurrency 2" in next(line for line in capsys.readouterr().out.splitlines() if "rules.slow" in line)


@pytest.mark.parametrize("options, message", [
    ({"concurrency": 0}, "task 'x': concurrency must be None or an integer from 1 to 1,000,000,000, got 0"),
    ({"concurrency": 2.5}, "task 'x': concurrency must be"),
    ({"rate": "10/day"}, "task 'x': rate: expected a rate 'COUNT/UNIT'"),
    ({"rate": 10}, "task 'x': rate: expected a rate"),
    ({"rate": "10/s", "burst": 0}, "task 'x': burst: expected a burst: an integer from 1"),
    ({"burst": 3}, "task 'x': burst needs a rate"),
    ({"key_rate": "10/day"}, "task 'x': key_rate: expected a rate 'COUNT/UNIT'"),
    ({"key_rate": "10/s", "key_burst": 0}, "task 'x': key_burst: expected a burst: an integer from 1"),
    ({"key_burst": 3}, "task 'x': key_burst needs a key_rate"),
    ({"key_circuit_breaker": {"failures": 2}}, "task 'x': key_circuit_breaker must be a CircuitBreaker"),
])
def test_task_rules_are_checked_where_the_task_is_declared(options, message) -> None:
    from actorq import TaskRegistry

    with pytest.raises(ValueError) as caught:
        TaskRegistry().task("x", **options)
    assert str(caught.value).startswith(message)


BREAKER = """
import os
from actorq import CircuitBreaker, RetryPolicy

@registry.task("rules.partner", queue="partner", max_attempts=50, retry=RetryPolicy.fixed(0.01),
               circuit_breaker=CircuitBreaker(failures=3, window=60, cool_down=0.3, probes=1))
def partner(flag):
    ctx = current_job()
    if os.path.exists(flag):
        ledger.record(ctx.id, ctx.attempt, tag="fail")
        raise OSError("partner down")
    ledger.record(ctx.id, ctx.attempt, tag="ok")
"""


async def test_a_circuit_breaker_opens_on_failures_and_closes_on_a_probe_s_success(topology, tmp_path, capsys) -> None:
    from actorq.testing import eventually

    flag = tmp_path / "partner-down"
    flag.write_text("down")
    topo = topology(BREAKER, processes=2, concurrency=2, queues=("partner",))
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([Job("rules.partner", [str(flag)]) for _ in range(6)])
        with topo.client() as client:
            await eventually(lambda: [b.state for b in client.breakers()] == ["open"], timeout=30)
            assert cli_main(["status", "--config", str(topo.toml_path), "--timeout", "0.2"]) == 0
            assert "task rules.partner: circuit breaker open: its jobs wait, probes from" in capsys.readouterr().out
            assert all(count == 0 for state, count in client.counts()["partner"].items()
                       if state in ("failed", "dead"))  # open: its jobs wait, none is failed
            flag.unlink()  # the partner is back: the next probe succeeds and closes it
            counts = await node.wait_idle(timeout=60)
            assert [(b.task, b.state) for b in client.breakers()] == [("rules.partner", "closed")]
    assert counts == {"partner": {"succeeded": 6}}
    entries = topo.ledger.read()
    assert sum(e.tag == "ok" for e in entries) == 6 and sum(e.tag == "fail" for e in entries) >= 3
    assert cli_main(["check", "--config", str(topo.toml_path)]) == 0
    assert "circuit breaker 3 failures in 60 s, cool-down 0.3 s, 1 probe" in capsys.readouterr().out


def test_a_circuit_breaker_option_must_be_a_circuit_breaker() -> None:
    from actorq import CircuitBreaker, TaskRegistry
    from actorq.jobs.outcome import TaskPolicy

    with pytest.raises(TypeError, match="task 'x': circuit_breaker must be a CircuitBreaker"):
        TaskRegistry().task("x", circuit_breaker={"failures": 5})  # type: ignore[arg-type]
    registry = TaskRegistry()
    task = registry.task("x", circuit_breaker=CircuitBreaker(failures=2), concurrency=3, rate="5/m")(lambda: None)
    policy = task.policy  # the policy travels as JSON from the task check to the node: it round-trips
    assert TaskPolicy.from_dict(policy.to_dict()) == policy and policy.circuit_breaker == CircuitBreaker(failures=2)
    keyed = registry.task("y", key_rate="5/m", key_burst=2, key_circuit_breaker=CircuitBreaker(probes=2))(lambda: None)
    assert TaskPolicy.from_dict(keyed.policy.to_dict()) == keyed.policy


KEY_BREAKER = """
import os
from actorq import CircuitBreaker

@registry.task("keys.call", queue="partner", max_attempts=1, concurrency_limit=2,
               key_circuit_breaker=CircuitBreaker(failures=2, window=60, cool_down=60, probes=1))
def call(flag_dir, key):
    ctx = current_job()
    if os.path.exists(os.path.join(flag_dir, key)):
        ledger.record(ctx.id, ctx.attempt, tag="fail")
        raise OSError(f"partner {key} down")
    ledger.record(ctx.id, ctx.attempt, tag="ok")
"""


async def test_a_key_s_breaker_holds_that_key_s_jobs_while_another_key_s_run(topology, tmp_path, capsys) -> None:
    from actorq.testing import eventually

    (tmp_path / "down").write_text("down")  # the partner of key "down" fails; that of "up" works
    topo = topology(KEY_BREAKER, processes=2, concurrency=2, queues=("partner",))
    async with Node(topo.config) as node:
        down = await node.queue().enqueue_many([Job("keys.call", [str(tmp_path), "down"], concurrency_key="down")
                                                for _ in range(8)])
        up = await node.queue().enqueue_many([Job("keys.call", [str(tmp_path), "up"], concurrency_key="up")
                                              for _ in range(10)])
        with topo.client() as client:
            def settled() -> bool:
                states = topo.states()
                return (client.key_breakers()[1] == {"open": 1}
                        and all(states.get(i) == "succeeded" for i in up)
                        and all(states.get(i) in ("dead", "blocked") for i in down))

            await eventually(settled, timeout=30, message="key down's breaker open, key up's jobs done")
            (shown,), _ = client.key_breakers()
            assert (shown.task, shown.key, shown.state) == ("keys.call", "down", "open")
            assert await node.key_breakers() == {"open": 1}
            printer = _ProgressPrinter(node, quiet=False)
            await printer.read_breakers()  # type: ignore[misc]
            printer.tick()
            assert "  key breakers open: 1" in capsys.readouterr().err  # the progress line of `actorq run`
            assert cli_main(["status", "--config", str(topo.toml_path), "--timeout", "0.2"]) == 0
            assert "task keys.call key 'down': circuit breaker open: its jobs wait" in capsys.readouterr().out
    states = topo.states()
    failed = [i for i in down if states[i] == "dead"]  # its one attempt failed
    # the 2 failures that opened it, and at most the 2 jobs its slots held then; the rest wait, none failed
    assert 2 <= len(failed) <= 4 and sum(states[i] == "blocked" for i in down) == 8 - len(failed)
    assert sum(e.tag == "ok" for e in topo.ledger.read()) == 10
    assert cli_main(["check", "--config", str(topo.toml_path)]) == 0
    assert "key circuit breaker 2 failures in 60 s, cool-down 60 s, 1 probe, per key" in capsys.readouterr().out
