"""The actorq command: exit codes, messages without tracebacks, --help that teaches (G9)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from actorq.ids import new_id
from actorq.journal import NewJob, SQLiteJournal
from actorq.node.constants import EXIT_CONFIG, EXIT_FAILURE, EXIT_JOURNAL, EXIT_OK
from cli_support import actorq_main

TASKS = '''
import actorq
registry = actorq.TaskRegistry()

@registry.task("cli.echo")
def echo(x):
    return x
'''


def actorq_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``actorq *args`` started as a user starts it, a process of its own in `cwd`: a node,
    a task module imported, a path relative to `cwd`. ``--help``, a topology refused before
    anything runs, and the read-only ``status`` and ``tree`` go through `actorq_main`, the
    same ``main(argv)`` in this process."""
    return subprocess.run([sys.executable, "-m", "actorq.node.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    (tmp_path / "cli_tasks.py").write_text(TASKS)
    path = tmp_path / "topology.toml"
    path.write_text('[node]\ntasks = ["cli_tasks:registry"]\nlog_level = "warning"\n'
                    f'[journal]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n'
                    "[workers]\nprocesses = 1\nconcurrency = 4\n")
    return path


@pytest.mark.parametrize("command", ["run", "check", "enqueue", "status", "tree"])
def test_help_teaches_with_an_example(command: str, tmp_path: Path) -> None:
    result = actorq_main(command, "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout and f"actorq {command} --config" in result.stdout


def test_top_level_help_lists_commands_and_exit_codes(tmp_path: Path) -> None:
    out = actorq_main("--help").stdout
    for word in ("run", "check", "enqueue", "status", "exit codes"):
        assert word in out


def test_g9_wrong_type_names_file_key_and_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[workers]\nprocesses = "two"\n')
    result = actorq_main("check", "--config", str(bad))  # refused before any import
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip() == f"actorq: {bad}: workers.processes: expected an integer from 1 to 1024, got 'two' (str)"
    assert "Traceback" not in result.stderr


def test_g9_unknown_key_did_you_mean(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[workers]\nconcurency = 4\n")
    result = actorq_main("run", "--config", str(bad))  # refused before anything runs
    assert result.returncode == EXIT_CONFIG
    assert "workers.concurency: unknown key; did you mean 'concurrency'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_g9_missing_file(tmp_path: Path) -> None:
    result = actorq_cmd("run", "--config", "nope.toml", cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.startswith("actorq: nope.toml: cannot read the file")


def test_g9_bad_url_scheme(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[journal]\nurl = "mysql://localhost/x"\n')
    result = actorq_main("status", "--config", str(bad))
    assert result.returncode == EXIT_CONFIG
    assert "journal.url: expected a URL starting with sqlite:/// or postgresql://" in result.stderr


def test_check_imports_the_tasks(topology: Path) -> None:
    result = actorq_cmd("check", "--config", str(topology), cwd=topology.parent)
    assert result.returncode == EXIT_OK, result.stderr
    assert "cli.echo" in result.stdout


def test_check_shows_each_tasks_declared_policy(topology: Path) -> None:
    (topology.parent / "cli_tasks.py").write_text(
        "from actorq import RetryPolicy, TaskRegistry\n"
        "registry = TaskRegistry()\n"
        "@registry.task('cli.echo')\n"
        "def echo(*args, **kwargs):\n    return None\n"
        "@registry.task('cli.careful', queue='slow', max_attempts=7, retry=RetryPolicy.fixed(30),\n"
        "               timeout=12.5, unique_for=600, on_crash='fail')\n"
        "def careful():\n    return None\n")
    result = actorq_cmd("check", "--config", str(topology), cwd=topology.parent)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert "  tasks     2" in lines
    assert ("    cli.careful: queue slow, priority 0, 7 attempts, retry fixed 30 s, on crash fail, "
            "timeout 12.5 s, unique for 600 s") in lines, lines
    assert ("    cli.echo: queue default, priority 0, 20 attempts, retry exponential from 1 s x2, at most 3600 s "
            "±20%, on crash reclaim") in lines, lines


def test_check_names_a_task_module_that_fails_to_import(topology: Path) -> None:
    (topology.parent / "cli_tasks.py").write_text("raise RuntimeError('boom at import')\n")
    result = actorq_cmd("check", "--config", str(topology), cwd=topology.parent)
    assert result.returncode == EXIT_CONFIG
    assert "cli_tasks" in result.stderr and "boom at import" in result.stderr


def test_enqueue_then_status_then_burst_run(topology: Path) -> None:
    cwd = topology.parent
    one = actorq_cmd("enqueue", "--config", str(topology), "cli.echo", '{"a": 1}', cwd=cwd)
    assert one.returncode == EXIT_OK, one.stderr
    assert len(one.stdout.strip()) == 32  # the job id
    many = actorq_cmd("enqueue", "--config", str(topology), "cli.echo", "hello", "--count", "50", cwd=cwd)
    assert "enqueued 50 jobs" in many.stdout
    status = actorq_main("status", "--config", str(topology), "--json")
    assert _counts_with_no_node(status.stdout) == {"default": {"ready": 51}}
    run = actorq_cmd("run", "--config", str(topology), "--burst", cwd=cwd)
    assert run.returncode == EXIT_OK, run.stderr
    assert "51 succeeded" in run.stderr
    status = actorq_main("status", "--config", str(topology), "--json")
    assert _counts_with_no_node(status.stdout) == {"default": {"succeeded": 51}}
    minute = json.loads(status.stdout)["last_minute"]["default"]  # the burst ran within the last minute
    assert (minute["finished"], minute["failed"], minute["leased"]) == (51, 0, 51) and minute["wait_mean"] >= 0
    table = actorq_main("status", "--config", str(topology))
    assert table.returncode == EXIT_OK, table.stderr
    assert "succeeded" in table.stdout and "51" in table.stdout
    assert table.stdout.splitlines()[-1] == "no node running on this journal"


def _counts_with_no_node(stdout: str) -> dict[str, dict[str, int]]:
    """The counts of a ``status --json`` run with no node: its "node" entry says so."""
    report = json.loads(stdout)
    assert sorted(report) == ["breakers", "key_breakers", "last_minute", "limits", "node", "paused", "queues"]
    assert report["breakers"] == {} and report["key_breakers"] == {"listed": [], "open": 0, "half_open": 0}
    assert report["paused"] == [] and report["limits"] == {}
    node = report["node"]
    assert node["running"] is False and "no node is running on this journal" in node["detail"], node
    return report["queues"]  # type: ignore[no-any-return]


def test_enqueue_rejects_bad_kwargs(topology: Path) -> None:
    result = actorq_cmd("enqueue", "--config", str(topology), "cli.echo", "--kwargs", "[1]", cwd=topology.parent)
    assert result.returncode == EXIT_CONFIG
    assert "argument --kwargs: expected a JSON object, got '[1]'" in result.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_status_of_a_journal_that_does_not_exist_says_so_and_creates_nothing(topology: Path, as_json: bool) -> None:
    # before: status created an empty journal at a mistyped path and printed "(no jobs)"
    cwd = topology.parent
    result = actorq_main("status", "--config", str(topology), *(["--json"] if as_json else []))
    assert result.returncode == EXIT_JOURNAL
    assert result.stderr == f"actorq: journal {cwd / 'cli.db'} does not exist: nothing was enqueued to it yet, " \
                            "or journal.url names another file\n"
    assert result.stdout == ""
    assert sorted(p.name for p in cwd.iterdir() if p.name.startswith("cli.db")) == []


def test_status_of_a_journal_with_damaged_pages_is_one_line(topology: Path) -> None:
    # before: a DatabaseError traceback ("database disk image is malformed"); `run` refuses such a file (E7)
    db = topology.parent / "cli.db"
    journal = SQLiteJournal(db)
    journal.enqueue([NewJob(new_id(), "default", "cli.echo", os.urandom(200)) for _ in range(3000)])
    journal.close()
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        # the root pages of the jobs and of the counts `status` reads (schema 14: never the jobs)
        roots = [row[0] for row in conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name IN ('actorq_jobs', 'actorq_counts')")]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(db, "r+b") as f:  # flip the header bytes of those root pages
        for root in roots:
            f.seek(page_size * (root - 1))
            f.write(b"\xff" * 16)
    result = actorq_main("status", "--config", str(topology))
    assert result.returncode == EXIT_JOURNAL
    assert result.stderr.startswith(f"actorq: journal {db} is not a valid SQLite database: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [("status",), ("enqueue", "cli.echo")])
def test_status_and_enqueue_give_up_on_postgresql_after_connect_retry_for(tmp_path: Path,
                                                                          command: tuple[str, ...]) -> None:
    # before: both ignored journal.connect_retry_for and retried for the default 30 s
    topology = tmp_path / "topology.toml"
    topology.write_text('[journal]\nurl = "postgresql://postgres@127.0.0.1:1/actorq"\nconnect_retry_for = 0.5\n')
    result = subprocess.run([sys.executable, "-m", "actorq.node.cli", command[0], "--config", str(topology),
                             *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert result.returncode == EXIT_JOURNAL, result.stderr
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr


def test_b14_second_node_on_the_same_file_is_refused(topology: Path) -> None:
    cwd = topology.parent
    first = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", "run", "--config", str(topology), "-q"],
                             cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the first node holds the lock once its journal is open; poll for it with a bounded loop
        lock = Path(f"{cwd / 'cli.db'}.lock")
        for _ in range(600):
            if lock.exists() and lock.read_text().strip():
                break
            subprocess.run(["sleep", "0.05"])
        second = actorq_cmd("run", "--config", str(topology), cwd=cwd)
        assert second.returncode == EXIT_JOURNAL
        assert "another node is running on journal" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=60)
    assert first.returncode == 0


def _wait_for_node_file(node: subprocess.Popen[str], node_file: Path) -> None:
    deadline = time.monotonic() + 60
    while not node_file.exists():  # bounded poll: the node writes it once its tree is up
        assert node.poll() is None and time.monotonic() < deadline, "the first node did not start"
        time.sleep(0.05)


def test_e11_second_node_through_a_symlink_to_the_journal_exits_3(topology: Path) -> None:
    cwd = topology.parent
    (cwd / "link.db").symlink_to(cwd / "cli.db")
    other = cwd / "other.toml"
    other.write_text(topology.read_text().replace(str(cwd / "cli.db"), "link.db"))
    first = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", "run", "--config", str(topology), "-q"],
                             cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_node_file(first, cwd / "cli.db.node")
        second = actorq_cmd("run", "--config", str(other), cwd=cwd)
        assert second.returncode == EXIT_JOURNAL, second.stderr
        assert "another node is running on journal" in second.stderr
        assert "Traceback" not in second.stderr
        tree = actorq_cmd("tree", "--json", "--config", str(other), cwd=cwd)  # the node file, found the same way
        assert tree.returncode == EXIT_OK, tree.stderr
        assert json.loads(tree.stdout)["pid"] == first.pid
    finally:
        first.terminate()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert not (cwd / "link.db.lock").exists()


def test_c13_run_with_a_task_module_that_fails_to_import_names_it_and_exits_2(topology: Path) -> None:
    (topology.parent / "cli_tasks.py").write_text("raise RuntimeError('boom at import')\n")
    result = actorq_cmd("run", "--config", str(topology), cwd=topology.parent)
    assert result.returncode == EXIT_CONFIG  # a mistake in the topology, as `check` reports it
    assert "node.tasks: cannot import task module 'cli_tasks'" in result.stderr
    assert "boom at import" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (topology.parent / "cli.db").exists()  # failed before touching the journal


@pytest.mark.parametrize(("module", "entry", "problem"), [
    (None, "missing_tasks:registry", "missing_tasks"),
    ("registry = 42\n", "cli_tasks:registry", "TaskRegistry"),
    ("raise ValueError('bad at import')\n", "cli_tasks:registry", "bad at import"),
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_run_exits_2_as_check_does_for_every_task_module_problem(topology: Path, command: str, module: str | None,
                                                                  entry: str, problem: str) -> None:
    # before: `check` exited 2 and `run` 1 for the same mistake
    if module is not None:
        (topology.parent / "cli_tasks.py").write_text(module)
    topology.write_text(topology.read_text().replace('"cli_tasks:registry"', f'"{entry}"'))
    result = actorq_cmd(command, "--config", str(topology), cwd=topology.parent)
    assert result.returncode == EXIT_CONFIG, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"actorq: {topology}: node.tasks: ") and problem in line, line


@pytest.mark.parametrize("command", ["tree", "status"])
def test_a_node_file_naming_no_control_endpoint_is_one_line(topology: Path, command: str) -> None:
    """A node file of a live process that lacks its control endpoint (another tool's, or damaged):
    before, ``tree`` ended in a KeyError traceback."""
    node_file = topology.parent / "cli.db.node"
    SQLiteJournal(topology.parent / "cli.db").close()  # the journal exists
    node_file.write_text(json.dumps({"pid": os.getpid(), "name": "x"}))
    result = actorq_main(command, "--config", str(topology))
    assert "Traceback" not in result.stderr
    text = result.stderr if command == "tree" else result.stdout
    assert f"{node_file} names no control endpoint" in text, (result.stdout, result.stderr)
    assert result.returncode == (EXIT_FAILURE if command == "tree" else EXIT_OK)


def test_tree_prints_the_live_tree_of_a_running_node(topology: Path) -> None:
    node_file = topology.parent / "cli.db.node"
    node = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", "run", "--quiet", "--config", str(topology)],
                            cwd=topology.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        tree: dict[str, object] = {}
        while time.monotonic() < deadline:  # bounded poll: the node and its worker start
            if node_file.exists():
                result = actorq_main("tree", "--json", "--config", str(topology))
                if result.returncode == EXIT_OK:
                    tree = json.loads(result.stdout)
                    if _processes(tree):
                        break
            time.sleep(0.2)
        assert tree.get("pid") == node.pid and tree.get("type") == "supervisor", tree
        workers = _processes(tree)
        assert len(workers) == 1 and workers[0]["state"] == "running"
        assert workers[0]["pid"] in [c.pid for c in psutil.Process(node.pid).children()]
        ids = set(_ids(tree))
        assert {"journal-writer", "dispatcher", "scheduler", "workers"} <= ids, ids
        text = actorq_main("tree", "--config", str(topology))
        assert text.returncode == EXIT_OK, text.stderr
        assert f"pid {workers[0]['pid']}" in text.stdout and "└── " in text.stdout
    finally:
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=60)
    assert node.returncode == 0, err
    assert not node_file.exists(), "a stopped node removes its node file"
    after = actorq_main("tree", "--config", str(topology))
    assert after.returncode == EXIT_FAILURE and "no node is running" in after.stderr


def _ids(tree: dict) -> list[str]:  # type: ignore[type-arg]
    return [tree["id"], *(i for child in tree.get("children", []) for i in _ids(child))]


def _processes(tree: dict) -> list[dict]:  # type: ignore[type-arg]
    found = [tree] if tree.get("kind") == "process" else []
    return found + [p for child in tree.get("children", []) for p in _processes(child)]


def test_status_json_keeps_a_queue_named_node_apart_from_the_node(topology: Path) -> None:
    cwd = topology.parent
    enqueued = actorq_cmd("enqueue", "--config", str(topology), "cli.echo", "1", "--queue", "node", cwd=cwd)
    assert enqueued.returncode == EXIT_OK, enqueued.stderr
    status = actorq_main("status", "--config", str(topology), "--json")
    assert status.returncode == EXIT_OK
    report = json.loads(status.stdout)
    assert report["queues"] == {"node": {"ready": 1}}
    assert report["node"]["running"] is False
    assert status.stderr == ""
