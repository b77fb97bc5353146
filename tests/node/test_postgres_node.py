"""A node on the PostgreSQL journal, and two nodes sharing one (issue scenarios C15).

The test PostgreSQL server (see tests/journal/journal_support.py),
a fresh schema per test, real worker processes. Every job is counted in an
independent ledger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg
import pytest

from actorq import Job, Node
from actorq.testing import check_total_queue, eventually
from cli_support import actorq_main
from node_process import NodeProcess

TASKS = """
@registry.task("pg.work")
async def work(n):
    await asyncio.sleep(0.01)
    record()
"""


def _states(url: str, schema: str) -> dict[str, tuple[str, int, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f'SELECT id, state, attempts, lease_owner FROM "{schema}".actorq_jobs').fetchall()
    return {job_id: (state, attempts, owner) for job_id, state, attempts, owner in rows}


def _two_nodes(topology, schema: str, url_a: str):  # noqa: ANN001, ANN202
    """Topologies of node-a (journal at `url_a`) and node-b on one schema, short leases and leader TTL."""
    from journal_support import PG_URL

    return tuple(
        topology(TASKS, processes=1, concurrency=4, prefetch=4, journal_url=url, schema=schema, name=name,
                 lease_timeout=3.0, leader_ttl=2.0, shutdown_timeout=5.0, toml_name=f"{name}.toml")
        for name, url in (("node-a", url_a), ("node-b", PG_URL)))


async def _both_running_with_a_holding_leases(topo_a, topo_b, schema: str) -> None:  # noqa: ANN001
    from journal_support import PG_URL

    def owners() -> set[str]:
        return {owner.split("/")[0] for _, _, owner in _states(PG_URL, schema).values() if owner}

    await eventually(lambda: topo_a.ledger.count() > 0 and topo_b.ledger.count() > 0 and "node-a" in owners(),
                     timeout=60, message="both nodes ran jobs, and node A holds leases")


async def _all_succeeded(schema: str, message: str) -> None:
    from journal_support import PG_URL

    await eventually(lambda: all(s == "succeeded" for s, _, _ in _states(PG_URL, schema).values()),
                     timeout=120, message=message)


def _actorq(*args: str, cwd: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actorq.node.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


async def test_a_node_runs_its_tree_on_postgresql(topology, pg_schema):
    from journal_support import PG_URL

    topo = topology(TASKS, processes=2, journal_url=PG_URL, schema=pg_schema)
    migrated = actorq_main("migrate", "--config", str(topo.toml_path))  # its main(argv), in this process
    assert migrated.returncode == 0, migrated.stderr
    assert f"(schema {pg_schema}): applied migrations 1, 2, 3, 4, 5, 6, 7" in migrated.stdout
    again = actorq_main("migrate", "--config", str(topo.toml_path))
    assert "up to date" in again.stdout
    async with Node(topo.config) as node:
        accepted = set(await node.queue().enqueue_many([Job("pg.work", [i]) for i in range(300)]))
        with topo.client() as client:  # another process's producer: LISTEN/NOTIFY wakes the node
            accepted |= set(client.enqueue_many([Job("pg.work", [1000 + i]) for i in range(100)]))
        await node.wait_idle(timeout=60)
        tree = await node.tree()
    core = next(child for child in tree["children"] if child["id"] == "core")
    assert [c["id"] for c in core["children"]] == ["journal-writer", "dispatcher", "scheduler", "listener", "leader",
                                                  "producers"]
    status = actorq_main("status", "--json", "--config", str(topo.toml_path))
    assert status.returncode == 0, status.stderr
    assert '"succeeded": 400' in status.stdout
    check = check_total_queue(accepted, topo.ledger.read(), {j for j, s in topo.states().items() if s == "succeeded"})
    assert check.valid and not check.duplicated, check.summary()


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
async def test_c15_two_nodes_share_the_queue_and_reclaim_a_killed_nodes_leases(topology, pg_schema, fault):
    # sigkill: node A dies without a word. sigstop: node A (all its processes) is paused past
    # its leases, which node B takes over; resumed, A's late acks must be fenced, not counted.
    from journal_support import PG_URL

    topo_a, topo_b = _two_nodes(topology, pg_schema, PG_URL)
    assert topo_a.dir == topo_b.dir and topo_a.ledger.path != topo_b.ledger.path
    with topo_a.client() as client:
        accepted = set(client.enqueue_many([Job("pg.work", [i]) for i in range(1500)]))
    a = NodeProcess(topo_a, 1)  # the real `actorq run`, each in its own process group
    b = NodeProcess(topo_b, 2)
    try:
        await _both_running_with_a_holding_leases(topo_a, topo_b, pg_schema)
        os.killpg(a.pid, signal.SIGKILL if fault == "sigkill" else signal.SIGSTOP)  # A cannot report it
        try:
            await _all_succeeded(pg_schema, "node B finished every job, A's after their leases expired")
        finally:
            if fault == "sigstop":
                os.killpg(a.pid, signal.SIGCONT)
        if fault == "sigkill":
            assert await a.exit_code(timeout=30) == -signal.SIGKILL
        else:  # resurrected: its workers finish what they held, and every such ack is rejected
            await eventually(lambda: "stale acks" in a.output(), timeout=60,
                             message="node A's late acks were fenced and counted")
            os.kill(a.pid, signal.SIGTERM)
            assert await a.exit_code(timeout=60) == 0, a.output()
        os.kill(b.pid, signal.SIGTERM)
        assert await b.exit_code(timeout=60) == 0, b.output()
    except BaseException:
        a.kill_everything()
        b.kill_everything()
        raise
    entries = topo_a.ledger.read() + topo_b.ledger.read()
    states = _states(PG_URL, pg_schema)
    check = check_total_queue(accepted, entries, {j for j, (s, _, _) in states.items() if s == "succeeded"})
    print(check.summary())
    assert check.valid, check.summary()
    assert {e.tag.split("/")[0] for e in entries} == {"1", "2"}, "both nodes ran jobs"
    reclaimed = [j for j, (_, attempts, _) in states.items() if attempts > 1]
    assert reclaimed, "node A held leases when it was killed: they must come back through expiry"
    with psycopg.connect(PG_URL) as conn:
        errors = {e for (e,) in conn.execute(f'SELECT DISTINCT error FROM "{pg_schema}".actorq_errors')}
    assert errors == {"lease expired"}, errors


def test_run_with_an_unreachable_database_retries_then_exits_3_naming_host_and_port(tmp_path):
    from journal_support import closed_port

    port = closed_port()
    (tmp_path / "unreach_tasks.py").write_text("import actorq\nregistry = actorq.TaskRegistry()\n")
    config = tmp_path / "topology.toml"
    config.write_text('[node]\ntasks = ["unreach_tasks"]\n'
                      f'[journal]\nurl = "postgresql://postgres:s3cret-canary@127.0.0.1:{port}/postgres"\n'
                      "connect_retry_for = 1.0\n[workers]\nprocesses = 1\n")
    result = _actorq("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # EXIT_JOURNAL, never a silent 0
    assert f"127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("retrying with backoff") == 1  # reported once per outage, then the verdict
    assert "s3cret-canary" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_d8_a_node_cut_off_from_postgresql_claims_nothing_and_recovers_when_the_link_heals(topology, pg_schema):
    from journal_support import PG_ADDRESS, PG_URL, TcpProxy

    proxy = TcpProxy(PG_ADDRESS)
    cut_url = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    topo_a, topo_b = _two_nodes(topology, pg_schema, cut_url)
    with topo_b.client() as client:
        accepted = set(client.enqueue_many([Job("pg.work", [i]) for i in range(1500)]))
    a = NodeProcess(topo_a, 1)
    b = NodeProcess(topo_b, 2)
    try:
        await _both_running_with_a_holding_leases(topo_a, topo_b, pg_schema)
        proxy.down()  # the partition: A's connections reset, new ones refused
        await _all_succeeded(pg_schema, "node B finished every job, A's after their leases expired")
        await eventually(lambda: f"127.0.0.1:{proxy.port} is unreachable" in a.output()
                         and "JOURNAL UNAVAILABLE, retrying" in a.output(), timeout=30,
                         message="node A reported the outage, in its log and in its progress line")
        assert a.proc.poll() is None, "a node cut off from its journal keeps running and retrying"
        proxy.up()  # healed
        await eventually(lambda: "reachable again" in a.output(), timeout=60, message="node A reconnected")
        before = topo_a.ledger.count()
        for batch in range(30):  # B may take a whole batch before A's first claim: send until A has some
            with topo_b.client() as client:
                accepted |= set(client.enqueue_many([Job("pg.work", [10_000 + 1000 * batch + i]) for i in range(300)]))
            try:
                await eventually(lambda: topo_a.ledger.count() > before, timeout=3, message="node A claims work again")
                break
            except AssertionError:
                continue
        assert topo_a.ledger.count() > before, "node A never claimed work after the link healed"
        await _all_succeeded(pg_schema, "everything done")
        for node in (a, b):
            os.kill(node.pid, signal.SIGTERM)
            assert await node.exit_code(timeout=60) == 0, node.output()
    except BaseException:
        a.kill_everything()
        b.kill_everything()
        raise
    finally:
        proxy.down()
    entries = topo_a.ledger.read() + topo_b.ledger.read()
    states = _states(PG_URL, pg_schema)
    check = check_total_queue(accepted, entries, {j for j, (s, _, _) in states.items() if s == "succeeded"})
    print(check.summary())
    assert check.valid, check.summary()
    output = a.output()
    assert output.count(f"journal at 127.0.0.1:{proxy.port} is unreachable") == 1, "once per outage, not per retry"
    stale = [line for line in output.splitlines() if "stale acks" in line]
    print("node A after the heal:", stale[-1] if stale else "no late ack arrived after the heal")
