"""Schedules on the command line and in topology.toml: `check`, `schedules list`, and bad tables (G9, G12)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actorq.jobs.schedule import Schedule
from actorq.journal import SQLiteJournal
from actorq.node.constants import EXIT_CONFIG, EXIT_OK
from cli_support import actorq_main

TASKS = '''
import actorq
registry = actorq.TaskRegistry()

@registry.task("cli.echo")
def echo(x):
    return x
'''

SCHEDULES = '''
[[schedules]]
name = "nightly"
cron = "30 2 * * *"
task = "cli.echo"
args = ["night"]
timezone = "Europe/Berlin"

[[schedules]]
name = "orphan"
cron = "*/5 * * * *"
task = "cli.missing"
queue = "q"
catch_up = "all"
'''


def actorq_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``actorq *args`` as a process in `cwd` (run, enqueue, check: they import the task
    modules); the journal-only commands go through `actorq_main`, in this process."""
    return subprocess.run([sys.executable, "-m", "actorq.node.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    (tmp_path / "cli_tasks.py").write_text(TASKS)
    path = tmp_path / "topology.toml"
    path.write_text('[node]\ntasks = ["cli_tasks:registry"]\nlog_level = "warning"\n'
                    f'[journal]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n'
                    "[workers]\nprocesses = 1\nconcurrency = 4\n" + SCHEDULES)
    return path


def test_check_lists_the_schedules_with_their_next_fire_time(topology: Path) -> None:
    result = actorq_cmd("check", "--config", str(topology), cwd=topology.parent)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert "  schedules 2" in lines
    nightly = next(line for line in lines if line.startswith("    nightly:"))
    assert "'30 2 * * *' Europe/Berlin -> cli.echo, next " in nightly and "T02:30:00+0" in nightly
    orphan = next(line for line in lines if line.startswith("    orphan:"))
    assert "task not registered" in orphan


def test_schedules_list_shows_the_journals_and_the_files(topology: Path) -> None:
    journal = SQLiteJournal(topology.parent / "cli.db")
    journal.put_schedules([Schedule("api-one", "0 * * * *", "cli.echo").to_row("api", 1_000.0)._replace(
        last_fired=1_796_158_800.0)])  # 2026-12-01T21:00:00Z
    journal.close()
    result = actorq_main("schedules", "list", "--config", str(topology), "--json")
    assert result.returncode == EXIT_OK, result.stderr
    listed = json.loads(result.stdout)
    assert listed["journal_problem"] is None
    entries = {e["name"]: e for e in listed["schedules"]}
    assert sorted(entries) == ["api-one", "nightly", "orphan"]
    assert entries["api-one"]["source"] == "api" and entries["api-one"]["last_fired"] == 1_796_158_800.0
    assert entries["api-one"]["in_journal"] is True and entries["nightly"]["in_journal"] is False
    assert entries["orphan"]["catch_up"] == "all" and entries["orphan"]["queue"] == "q"
    assert entries["orphan"]["next_fire"] % 300 == 0
    table = actorq_main("schedules", "list", "--config", str(topology))
    assert table.returncode == EXIT_OK, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["name", "cron", "timezone", "task", "queue", "catch_up", "source", "last_fired",
                              "next_fire"]
    assert [row.split()[0] for row in rows] == ["api-one", "nightly", "orphan"]
    assert "2026-12-01T21:00:00+00:00" in rows[0]


def test_schedules_list_without_a_journal_shows_the_files(topology: Path) -> None:
    result = actorq_main("schedules", "list", "--config", str(topology))
    assert result.returncode == EXIT_OK, result.stderr
    assert "the journal could not be read" in result.stdout
    assert "file (at next start)" in result.stdout
    assert not (topology.parent / "cli.db").exists()  # listing creates no journal


@pytest.mark.parametrize("table, message", [
    ('name = "a"\ncron = "61 * * * *"\ntask = "t"',
     "schedules[0].cron: schedule 'a': cron '61 * * * *' is not a valid cron expression"),
    ('name = "a"\ncron = "* * * * *"\ntask = "t"\ntimezone = "Mars/Olympus"',
     "schedules[0].timezone: schedule 'a': unknown timezone 'Mars/Olympus'"),
    ('name = "a"\ncron = "* * * * *"\ntask = "t"\ncatchup = "all"',
     "schedules[0].catchup: unknown key; did you mean 'catch_up'?"),
    ('name = "a"\ncron = "* * * * *"', "schedules[0].task: missing"),
    ('name = "a"\ncron = "* * * * *"\ntask = "t"\ncatch_up = "often"',
     "schedules[0].catch_up: expected one of 'none', 'last', 'all', got 'often'"),
    (f'name = "{"n" * 201}"\ncron = "* * * * *"\ntask = "t"',
     "schedules[0].name: a schedule name may have at most 200 characters, got 201"),
    ('name = "a"\ncron = 5\ntask = "t"', "schedules[0].cron: expected a string, got 5 (int)"),
    ('name = "a"\ncron = "* * * * *"\ntask = "t"\nargs = "x"', "schedules[0].args: expected an array"),
    ('name = "a"\ncron = "* * * * *"\ntask = "t"\nargs = [{ 1 = 2 }]', None),  # TOML keys are strings: fine
    ('name = "a"\ncron = "* * * * *"\ntask = "t"\nargs = ["' + "x" * 200_000 + '"]',
     "schedules[0]: schedule 'a': its arguments take 200,00"),
    ('name = "a"\ncron = "* * * * *"\ntask = "t"\n[[schedules]]\nname = "a"\ncron = "0 * * * *"\ntask = "u"',
     "schedules[1].name: duplicate schedule name 'a' (also schedules[0])"),
])
def test_g9_a_bad_schedule_table_is_one_line_naming_the_key(tmp_path: Path, table: str, message: str | None) -> None:
    path = tmp_path / "topology.toml"
    path.write_text("[node]\ntasks = []\n[dispatcher]\nmax_frame_bytes = 262144\n[[schedules]]\n" + table + "\n")
    result = actorq_cmd("check", "--config", str(path), cwd=tmp_path)
    if message is None:
        assert result.returncode == EXIT_OK, result.stderr
        return
    assert result.returncode == EXIT_CONFIG, result.stdout
    assert result.stderr.startswith(f"actorq: {path}: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
