"""A node's producer endpoint at a fixed address (``[producers] endpoint``), and producers sent to it.

On PostgreSQL a Client writes into the journal by default; with ``node_endpoint``
(``AsyncClient`` too, and ``actorq enqueue --node-endpoint``) its enqueues go
through the node listening there instead, as on SQLite. Real ``actorq run``
processes, the test PostgreSQL server, real ZeroMQ sockets; every job is counted
in an independent ledger. Bad values of the setting and of the flag are refused
by name, in one line (G9, G12); the endpoint has no authentication, so it is
loopback only (H2) and an ipc socket file is its user's alone (H8).
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import port_for
import psycopg
import pytest

from actorq import AsyncClient, Client, Job
from actorq.errors import NotCommitted
from actorq.journal import PostgresJournal, SQLiteJournal
from actorq.node.cli import main
from actorq.node.config import ConfigError, parse_config
from actorq.node.constants import EXIT_CONFIG, EXIT_JOURNAL
from actorq.testing import check_total_queue, eventually
from node_process import NodeProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))
from socket_support import wait_for_node  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TASKS = """
@registry.task("ep.work")
async def work(n):
    record()
"""

EXPECTED = "expected ipc:///absolute/path or tcp://127.0.0.1:PORT (PORT 1 to 65535)"
BAD_ENDPOINTS = [
    ("tcp://0.0.0.0:5555", f"{EXPECTED}, got 'tcp://0.0.0.0:5555': the producer endpoint has no authentication, "
                           "so it listens on 127.0.0.1 only"),
    ("tcp://10.1.2.3:5555", f"{EXPECTED}, got 'tcp://10.1.2.3:5555': the producer endpoint has no authentication, "
                            "so it listens on 127.0.0.1 only"),
    ("tcp://*:5555", f"{EXPECTED}, got 'tcp://*:5555': the producer endpoint has no authentication, "
                     "so it listens on 127.0.0.1 only"),
    ("tcp://127.0.0.1:0", f"{EXPECTED}, got 'tcp://127.0.0.1:0'"),
    ("tcp://127.0.0.1:65536", f"{EXPECTED}, got 'tcp://127.0.0.1:65536'"),
    ("tcp://127.0.0.1:*", f"{EXPECTED}, got 'tcp://127.0.0.1:*'"),
    ("tcp://127.0.0.1:" + "9" * 30, f"{EXPECTED}, got 'tcp://127.0.0.1:{'9' * 30}'"),
    ("ipc://relative/producers", f"{EXPECTED}; an ipc:// path is absolute (no abstract @name), "
                                 "got 'ipc://relative/producers'"),
    ("ipc://@abstract", f"{EXPECTED}; an ipc:// path is absolute (no abstract @name), got 'ipc://@abstract'"),
    ("ipc:///tmp/a-directory/", f"{EXPECTED}; an ipc:// path names a file, got 'ipc:///tmp/a-directory/'"),
    ("ipc:///" + "p" * 200, f"{EXPECTED}; an ipc:// path has at most 107 bytes, got one of 201"),
    ("inproc://producers", f"{EXPECTED}, got 'inproc://producers'"),
    ("producers.sock", f"{EXPECTED}, got 'producers.sock'"),
]


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _never_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a direct write from this process fail: the jobs must go through the node."""
    def refuse(self: object, jobs: object) -> None:
        raise AssertionError("the client wrote into the journal itself")

    monkeypatch.setattr(PostgresJournal, "enqueue", refuse)
    monkeypatch.setattr(SQLiteJournal, "enqueue", refuse)


def _committed(url: str, schema: str, ids: set[str]) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f'SELECT id FROM "{schema}".actorq_jobs WHERE id = ANY(%s)', (list(ids),)).fetchall()
    return {job_id for (job_id,) in rows}


async def _start(topo, run: int, processes: int) -> NodeProcess:  # noqa: ANN001
    node = NodeProcess(topo, run)
    try:
        await asyncio.to_thread(wait_for_node, topo.config.node_file, processes, node.output)
    except BaseException:
        node.kill_everything()
        raise
    return node


async def _stop(node: NodeProcess) -> None:
    node.proc.send_signal(signal.SIGTERM)
    assert await node.exit_code() == 0, node.output()[-2000:]


# -- real processes: a PostgreSQL node, producers sent to its endpoint ---------------------------------
async def test_a_client_with_node_endpoint_enqueues_through_a_postgresql_node_and_the_jobs_run(
        topology, pg_schema, tmp_path, monkeypatch) -> None:
    from journal_support import PG_URL

    endpoint = f"ipc://{tmp_path}/producers.sock"
    topo = topology(TASKS, journal_url=PG_URL, schema=pg_schema, processes=2, producers_endpoint=endpoint)
    node = await _start(topo, 1, processes=2)
    try:
        socket_file = tmp_path / "producers.sock"
        assert stat.S_ISSOCK(socket_file.stat().st_mode)
        assert stat.S_IMODE(socket_file.stat().st_mode) == 0o600  # H8: only the node's user may connect
        _never_directly(monkeypatch)  # from here on, a direct write in this process fails the test

        with Client(PG_URL, schema=pg_schema, node_endpoint=endpoint) as client:
            one = await asyncio.to_thread(client.enqueue, Job("ep.work", [0]))
            assert _committed(PG_URL, pg_schema, {one}) == {one}  # returned means committed
            many = await asyncio.to_thread(client.enqueue_many, [Job("ep.work", [n]) for n in range(1, 1501)])
            assert _committed(PG_URL, pg_schema, set(many)) == set(many)  # 1,500 jobs: two requests
            first = Job("ep.work", [-1], unique_key="only-one")
            holder = await asyncio.to_thread(client.enqueue, first)
            second = await asyncio.to_thread(client.enqueue, Job("ep.work", [-2], unique_key="only-one"))
            assert holder == second == first.id  # the live holder's id, as when written directly
        async with AsyncClient(PG_URL, schema=pg_schema, node_endpoint=endpoint) as async_client:
            from_async = await async_client.enqueue(Job("ep.work", [-3]))
        monkeypatch.undo()
        cli = subprocess.run([sys.executable, "-m", "actorq.node.cli", "enqueue", "--config", str(topo.toml_path),
                              "--node-endpoint", endpoint, "ep.work", "-4"],
                             cwd=topo.dir, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        from_cli = cli.stdout.strip()

        accepted = {one, *many, holder, from_async, from_cli}
        assert _committed(PG_URL, pg_schema, accepted) == accepted
        await eventually(lambda: {e.job_id for e in topo.ledger.read()} >= accepted, timeout=60,
                         message="every job ran")
        await eventually(lambda: topo.all_in(accepted, "succeeded"), timeout=30,
                         message="every job succeeded")
    finally:
        await _stop(node)

    check = check_total_queue(accepted, topo.ledger.read(), {j for j, s in topo.states().items() if s == "succeeded"})
    assert check.valid and not check.duplicated, check.summary()
    assert not socket_file.exists()  # the stopped node removed its socket file (libzmq leaves it)
    with Client(PG_URL, schema=pg_schema, node_endpoint=endpoint) as client:
        with pytest.raises(NotCommitted, match=f"no node listens at {endpoint}; the jobs were not committed"):
            client.enqueue(Job("ep.work", [-5]))  # at once: nothing listens, nothing to wait for
    assert topo.info(from_cli).state == "succeeded"


async def test_a_client_sent_to_a_loopback_tcp_endpoint_finds_the_node_and_notices_its_death(topology) -> None:
    endpoint = f"tcp://127.0.0.1:{port_for.select_random()}"
    topo = topology(TASKS, processes=1, producers_endpoint=endpoint)
    node = await _start(topo, 1, processes=1)
    try:
        with Client(topo.url, node_endpoint=endpoint, timeout=60.0) as client:
            job_id = await asyncio.to_thread(client.enqueue, Job("ep.work", [1]))
            await eventually(lambda: topo.states().get(job_id) == "succeeded", timeout=60, message="the job ran")
            os.killpg(node.pid, signal.SIGSTOP)  # the node hears nothing more, then dies
            try:
                call = asyncio.ensure_future(asyncio.to_thread(client.enqueue, Job("ep.work", [2])))
                await asyncio.sleep(0.5)  # the request is out and unanswered (SIGSTOP): no timing is asserted
                assert not call.done()
            finally:
                os.killpg(node.pid, signal.SIGKILL)
                os.killpg(node.pid, signal.SIGCONT)
            assert await node.exit_code() == -signal.SIGKILL  # reaped: no zombie left to look alive
            with pytest.raises(NotCommitted, match=r"the node \(pid \d+\) ended before answering"):
                await asyncio.wait_for(call, 30)  # long before the client's 60 s timeout
    except BaseException:
        node.kill_everything()
        raise


async def test_a_second_node_on_the_same_ipc_endpoint_is_refused_and_the_first_keeps_it(topology, tmp_path) -> None:
    endpoint = f"ipc://{tmp_path}/shared.sock"
    first = topology(TASKS, processes=1, producers_endpoint=endpoint)
    node = await _start(first, 1, processes=1)
    try:
        # another journal (no lock in common), the same producer endpoint
        second = tmp_path / "second.toml"
        second.write_text(first.toml_path.read_text().replace("journal.db", "second.db"))
        refused = subprocess.run([sys.executable, "-m", "actorq.node.cli", "run", "--config", str(second)],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert refused.returncode == EXIT_CONFIG, refused.stderr
        assert "Traceback" not in refused.stderr
        last = refused.stderr.splitlines()[-1]
        assert last == (f"actorq: {second}: producers.endpoint: process {node.pid} already listens at {endpoint} "
                        "(another node?); each node needs an endpoint of its own")
        with Client(first.url, node_endpoint=endpoint) as client:  # still the first node's
            job_id = client.enqueue(Job("ep.work", [1]))
        await eventually(lambda: first.states().get(job_id) == "succeeded", timeout=60, message="the job ran")
    finally:
        await _stop(node)


@pytest.mark.parametrize(("section", "key", "serves"), [("producers", "producers.endpoint", "producers"),
                                                        ("node", "node.endpoint", "workers")])
async def test_an_endpoint_that_cannot_be_bound_is_one_line_naming_the_file_and_key(tmp_path, section, key,
                                                                                    serves) -> None:
    """A missing directory: one line naming the file and the key. `[node] endpoint` (the
    dispatcher's) ended in a traceback before."""
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\n'
                        f'[{section}]\nendpoint = "ipc://{tmp_path}/no/such/dir/{section}.sock"\n')
    result = subprocess.run([sys.executable, "-m", "actorq.node.cli", "run", "--config", str(topology)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"actorq: {topology}: {key}: cannot serve {serves} at ipc://{tmp_path}/no/such/dir/"
        f"{section}.sock: No such file or directory")


# -- bad values: one line naming the file and the key (G9, G12, H2) -------------------------------------
@pytest.mark.parametrize(("value", "expected"), BAD_ENDPOINTS, ids=[v for v, _ in BAD_ENDPOINTS])
def test_g9_bad_producers_endpoints_are_refused_naming_file_and_key(tmp_path, capsys, value, expected) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"producers": {"endpoint": value}}, source="topology.toml")
    assert info.value.key == "producers.endpoint"
    assert str(info.value) == f"topology.toml: producers.endpoint: {expected}"

    topology = tmp_path / "topology.toml"
    topology.write_text(f"[producers]\nendpoint = {_toml_string(value)}\n")
    assert main(["check", "--config", str(topology)]) == EXIT_CONFIG
    assert capsys.readouterr().err == f"actorq: {topology}: producers.endpoint: {expected}\n"


@pytest.mark.parametrize("value", [5, True, ["ipc:///tmp/x"]], ids=repr)
def test_g9_a_producers_endpoint_that_is_no_string_is_refused(value) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"producers": {"endpoint": value}}, source="topology.toml")
    assert str(info.value) == f"topology.toml: producers.endpoint: expected a string, got {value!r} " \
                              f"({type(value).__name__})"


def test_run_refuses_a_non_loopback_endpoint_in_one_line_before_opening_the_journal(tmp_path) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\n'
                        '[producers]\nendpoint = "tcp://0.0.0.0:5555"\n')
    result = subprocess.run([sys.executable, "-m", "actorq.node.cli", "run", "--config", str(topology)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_CONFIG
    assert result.stderr == f"actorq: {topology}: producers.endpoint: {BAD_ENDPOINTS[0][1]}\n"
    assert not (tmp_path / "j.db").exists()


@pytest.mark.parametrize("value", ["", "0.0.0.0:5555"] + [v for v, _ in BAD_ENDPOINTS[:4]])
def test_g12_enqueue_refuses_a_bad_node_endpoint_flag_in_one_line(tmp_path, capsys, value) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\n')
    with pytest.raises(SystemExit) as info:
        main(["enqueue", "--config", str(topology), "ep.work", f"--node-endpoint={value}"])
    assert info.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("actorq enqueue: argument --node-endpoint: expected ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "j.db").exists()


def test_enqueue_with_no_node_at_the_endpoint_exits_3_and_commits_nothing(tmp_path, capsys) -> None:
    (tmp_path / "ep_tasks.py").write_text("import actorq\nregistry = actorq.TaskRegistry()\n")
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[node]\ntasks = ["ep_tasks:registry"]\n[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\n')
    endpoint = f"ipc://{tmp_path}/nobody.sock"
    assert main(["enqueue", "--config", str(topology), "--node-endpoint", endpoint, "ep.work"]) == EXIT_JOURNAL
    assert capsys.readouterr().err == (f"actorq: no node listens at {endpoint}; the jobs were not committed: "
                                       "send them again once it runs\n")
    with Client(f"sqlite:///{tmp_path / 'j.db'}") as client:
        assert client.counts() == {}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"node_endpoint": "tcp://192.168.1.1:5555"}, "node_endpoint: expected ipc:///absolute/path or tcp://"),
    ({"node_endpoint": ""}, "node_endpoint: expected an endpoint, got ''"),
    ({"node_endpoint": "ipc:///tmp/x.sock", "via_node": False}, "via_node=False forbids that"),
])
def test_a_client_refuses_a_bad_node_endpoint_before_opening_the_journal(tmp_path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Client(f"sqlite:///{tmp_path / 'j.db'}", **kwargs)
    assert not (tmp_path / "j.db").exists()
