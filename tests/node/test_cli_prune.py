"""``actorq jobs prune``: finished jobs deleted by age and state, in batches, with or without a node.

Old jobs are made by moving their ``finished_at`` back in the file (no sleeping);
the command is run as a user runs it, in a subprocess, except for the flag checks,
which argparse does before anything is opened.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actorq.journal import Failure, JobState, NewJob, SQLiteJournal
from actorq.node.cli import main
from actorq.node.constants import EXIT_CONFIG
from cli_support import actorq_main

pytestmark = pytest.mark.timeout(120)
DAY = 86_400.0


def actorq_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``actorq *args`` as a process in `cwd` (run, enqueue, check: they import the task
    modules); the journal-only commands go through `actorq_main`, in this process."""
    return subprocess.run([sys.executable, "-m", "actorq.node.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=110)


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    (tmp_path / "prune_tasks.py").write_text(
        "import asyncio\nimport actorq\nregistry = actorq.TaskRegistry()\n\n"
        "@registry.task('prune.wait')\nasync def wait():\n    await asyncio.sleep(3600)\n")
    path = tmp_path / "topology.toml"
    # the node keeps everything: only the command prunes here
    path.write_text('[node]\ntasks = ["prune_tasks:registry"]\nlog_level = "warning"\n'
                    f'[journal]\nurl = "sqlite:///{tmp_path / "prune.db"}"\nretain_succeeded = "forever"\n'
                    'retain_cancelled = "forever"\nretain_failed = "forever"\nretain_dead = "forever"\n'
                    "[workers]\nprocesses = 1\nconcurrency = 2\nprefetch = 0\nshutdown_timeout = 1.0\n")
    return path


def finished_jobs(db: Path, succeeded: int, dead: int, *, age: float) -> list[str]:
    """Add `succeeded` succeeded and `dead` dead jobs that finished `age` seconds ago; returns their ids."""
    journal = SQLiteJournal(db)
    try:
        prefix = f"{int(age)}-"
        ids = [f"{prefix}s{n}" for n in range(succeeded)] + [f"{prefix}d{n}" for n in range(dead)]
        journal.enqueue([NewJob(job_id, "idle", "prune.none", b"\x92\x90\x80", max_attempts=1) for job_id in ids])
        leased = journal.lease(["idle"], "test", len(ids), 60.0)
        journal.complete([(j.id, j.lease_id) for j in leased if "s" in j.id.split("-")[1]])
        journal.fail([Failure(j.id, j.lease_id, "ValueError: no", JobState.DEAD) for j in leased if "d" in j.id.split("-")[1]])
    finally:
        journal.close()
    with sqlite3.connect(db) as raw:
        raw.execute(f"UPDATE actorq_jobs SET finished_at = finished_at - ? WHERE id LIKE '{prefix}%'", (age,))
    return ids


def states(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as raw:
        return dict(raw.execute("SELECT id, state FROM actorq_jobs").fetchall())


def error_rows(db: Path) -> int:
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT count(*) FROM actorq_errors").fetchone()[0]


def test_prune_removes_old_finished_jobs_of_the_states_asked_in_batches(topology: Path) -> None:
    db = topology.parent / "prune.db"
    finished_jobs(db, 5, 2, age=8 * DAY)
    young = finished_jobs(db, 2, 1, age=60.0)
    result = actorq_main("jobs", "--config", str(topology), "prune", "--older-than", "7d", "--state", "succeeded",
                         "--batch", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pruned 5 jobs (succeeded) that finished more than 7d ago\n"
    assert "actorq jobs prune: 2 removed so far" in result.stderr  # after the first full batch
    assert set(states(db)) == {"691200-d0", "691200-d1", *young}

    result = actorq_main("jobs", "--config", str(topology), "prune", "--older-than", "1h")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pruned 2 jobs (succeeded, cancelled, failed, dead) that finished more than 1h ago\n"
    assert set(states(db)) == set(young) and error_rows(db) == 1  # the dead jobs' errors went with them
    result = actorq_main("jobs", "--config", str(topology), "prune", "--older-than", "0")
    assert result.stdout == "pruned 3 jobs (succeeded, cancelled, failed, dead) that finished more than 0s ago\n"
    assert states(db) == {} and error_rows(db) == 0


def test_prune_beside_a_running_node_leaves_its_live_jobs_alone(topology: Path) -> None:
    db = topology.parent / "prune.db"
    old = finished_jobs(db, 30, 0, age=2 * DAY)
    node = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", "run", "--quiet", "--config", str(topology)],
                            cwd=topology.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        enqueued = actorq_cmd("enqueue", "--config", str(topology), "prune.wait", "--count", "3", cwd=topology.parent)
        assert enqueued.returncode == 0, enqueued.stderr
        deadline = time.monotonic() + 60
        while sorted(states(db).values()).count("leased") < 2:  # both slots run one
            assert node.poll() is None and time.monotonic() < deadline, "the node did not lease the jobs"
            time.sleep(0.05)
        result = actorq_main("jobs", "--config", str(topology), "prune", "--older-than", "1d", "--batch", "7")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "pruned 30 jobs (succeeded, cancelled, failed, dead) that finished more than 1d ago\n"
        left = states(db)
        assert not set(old) & set(left)
        assert sorted(left.values()) == ["leased", "leased", "ready"]
    finally:
        node.terminate()
        node.wait(60)


@pytest.mark.parametrize(("argv", "message"), [
    (["prune", "--older-than", "7w"], "argument --older-than: expected a duration such as"),
    (["prune", "--older-than", "forever"], "argument --older-than: expected a duration such as"),
    (["prune", "--older-than=-1d"], "argument --older-than: expected a duration such as"),
    (["prune", "--older-than", "3651d"], "argument --older-than: expected a duration such as"),
    (["prune", "--older-than", "1d", "--state", "ready"], "argument --state: expected a final state, one of "
                                                           "succeeded, cancelled, failed, dead; got 'ready'"),
    (["prune", "--older-than", "1d", "--batch", "0"], "argument --batch: expected an integer from 1 to 100000"),
    (["prune", "--older-than", "1d", "--state"], "argument --state: expected at least one argument"),
])
def test_bad_prune_flags_are_one_line_naming_the_flag(topology: Path, capsys: pytest.CaptureFixture[str],
                                                      argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["jobs", "--config", str(topology), *argv])
    assert exited.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(("argv", "message"), [
    (["prune"], "actorq jobs prune: the following arguments are required: --older-than"),
    (["prune", "some-id", "--older-than", "1d"], "actorq: unrecognized arguments: some-id"),
    (["cancel"], "actorq jobs cancel: the following arguments are required: ID"),
    (["cancel", "some-id", "--state", "dead"], "actorq: unrecognized arguments: --state dead"),
])
def test_prune_and_cancel_refuse_each_others_arguments(topology: Path, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["jobs", "--config", str(topology), *argv])
    assert exited.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (topology.parent / "prune.db").exists()  # refused before the journal was opened


def test_prune_on_postgresql(tmp_path: Path, pg_schema: str) -> None:
    from journal_support import PG_URL, pg_admin, require_pg

    from actorq.journal import PostgresJournal

    require_pg()
    journal = PostgresJournal(PG_URL, schema=pg_schema)
    try:
        journal.enqueue([NewJob(f"j{n}", "q", "prune.none", b"\x92\x90\x80") for n in range(5)])
        leased = journal.lease(["q"], "test", 5, 60.0)
        assert journal.complete([(j.id, j.lease_id) for j in leased]) == 5
    finally:
        journal.close()
    with pg_admin() as admin:  # three of them finished two days ago (by the server's clock)
        admin.execute(f'UPDATE "{pg_schema}".actorq_jobs SET finished_at = now() - interval \'2 days\''
                      " WHERE id IN ('j0', 'j1', 'j2')")
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "{PG_URL}"\nschema = "{pg_schema}"\n')
    result = actorq_main("jobs", "--config", str(topology), "prune", "--older-than", "1d")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pruned 3 jobs (succeeded, cancelled, failed, dead) that finished more than 1d ago\n"
    with pg_admin() as admin:
        assert sorted(r[0] for r in admin.execute(f'SELECT id FROM "{pg_schema}".actorq_jobs')) == ["j3", "j4"]


def test_check_prints_the_retention_of_each_final_state(topology: Path) -> None:
    topology.write_text(topology.read_text().replace('retain_succeeded = "forever"', 'retain_succeeded = "36h"'))
    result = actorq_cmd("check", "--config", str(topology), cwd=topology.parent)
    assert result.returncode == 0, result.stderr
    assert "  retention succeeded 36h, cancelled forever, failed forever, dead forever\n" in result.stdout
