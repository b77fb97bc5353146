"""The operator's commands through the real ``actorq`` command, on SQLite and PostgreSQL:
``jobs list|show|retry|cancel``, ``queues list|clear``, ``health``.

The journal is filled straight through its protocol (every state, errors with tracebacks,
hostile text); each command runs through the command's own ``main(argv)`` in the test's
process (`cli_support`), its exit code, stdout and stderr as a user sees them, with no node
(``health`` starts a real one, as a process). Nothing asserts a duration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest

from actorq.journal import Failure, JobState, KeptResult, NewJob
from actorq.journal.backends import open_journal
from actorq.journal.protocol import Journal
from actorq.node.cli import main
from cli_support import actorq_main
from actorq.node.constants import EXIT_CONFIG, EXIT_FAILURE, EXIT_JOURNAL, EXIT_OK

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "journal"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))

HOSTILE = "bad\x1b[2J\x1b]0;owned\x07\rtext"  # clears the screen, sets the title, rewrites the line


def actorq(topology: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``actorq *args --config topology``, run in this process (what it parses and prints is
    what these tests are about; `tests/node/test_cli.py` starts the command as a process)."""
    return actorq_main(*args, "--config", str(topology))


class Setup:
    """A topology file on one journal, and that journal open for the test to fill and read."""

    def __init__(self, topology: Path, url: str, schema: str) -> None:
        self.topology = topology
        self.journal: Journal = open_journal(url, schema=schema)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return actorq(self.topology, *args)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        assert result.returncode == EXIT_OK, result.stderr
        return result


@pytest.fixture(params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    topology = tmp_path / "topology.toml"
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path / 'ops.db'}", "actorq"
        topology.write_text(f'[journal]\nurl = "{url}"\n')
    else:
        from journal_support import PG_URL

        url, schema = PG_URL, request.getfixturevalue("pg_schema")
        topology.write_text(f'[journal]\nurl = "{url}"\nschema = "{schema}"\n')
    made = Setup(topology, url, schema)
    try:
        yield made
    finally:
        made.journal.close()


def payload(*args: Any, **kwargs: Any) -> bytes:
    return msgpack.packb([list(args), kwargs])


def add(journal: Journal, job_id: str, *, queue: str = "q", task: str = "ops.task", data: bytes | None = None,
        max_attempts: int = 3, run_at: float | None = None) -> None:
    journal.enqueue([NewJob(job_id, queue, task, data or payload(), max_attempts=max_attempts, run_at=run_at)])


def make_dead(journal: Journal, job_ids: list[str], queue: str = "q") -> None:
    # priority -1: leased before the queue's other jobs, which stay as they are
    journal.enqueue([NewJob(job_id, queue, "ops.task", payload(), priority=-1, max_attempts=1) for job_id in job_ids])
    leased = journal.lease([queue], "w1", len(job_ids), 60.0)
    assert journal.fail([Failure(j.id, j.lease_id, "ValueError: boom", JobState.DEAD, traceback="Traceback: boom")
                         for j in leased]) == len(job_ids)


def test_jobs_list_pages_by_cursor_filters_and_prints_json(setup: Setup) -> None:
    journal = setup.journal
    for n in range(5):
        add(journal, f"a{n}", task="ops.a" if n % 2 else "ops.b")
    add(journal, "b0", queue="other")
    make_dead(journal, ["d0", "d1"])
    first = json.loads(setup.ok("jobs", "list", "--limit", "3", "--json").stdout)
    assert [j["id"] for j in first["jobs"]] == ["a0", "a1", "a2"] and first["next"] == "a2"
    second = json.loads(setup.ok("jobs", "list", "--limit", "3", "--after", first["next"], "--json").stdout)
    third = json.loads(setup.ok("jobs", "list", "--limit", "3", "--after", second["next"], "--json").stdout)
    assert [j["id"] for j in second["jobs"] + third["jobs"]] == ["a3", "a4", "b0", "d0", "d1"]
    assert third["next"] is None  # a short page: nothing after it
    dead = json.loads(setup.ok("jobs", "list", "--state", "dead", "--json").stdout)["jobs"]
    assert [(j["id"], j["state"], j["last_error"], j["attempts"]) for j in dead] == [
        ("d0", "dead", "ValueError: boom", 1), ("d1", "dead", "ValueError: boom", 1)]
    assert dead[0]["finished_at"] is not None
    some = json.loads(setup.ok("jobs", "list", "--queue", "q", "--task", "ops.a", "--json").stdout)["jobs"]
    assert [j["id"] for j in some] == ["a1", "a3"]
    table = setup.ok("jobs", "list", "--state", "ready", "--limit", "2").stdout.splitlines()
    assert table[0].split()[:4] == ["id", "state", "queue", "task"]
    assert [line.split()[:3] for line in table[1:3]] == [["a0", "ready", "q"], ["a1", "ready", "q"]]
    assert table[3] == "next page: --after a1"
    assert setup.ok("jobs", "list", "--queue", "nowhere").stdout == "(no jobs)\n"


def test_jobs_show_prints_arguments_result_attempts_and_traceback_with_control_characters_escaped(
        setup: Setup) -> None:
    journal = setup.journal
    add(journal, "x", data=payload(1, HOSTILE, to="a@b.c"))
    for n in (1, 2):
        job = journal.lease(["q"], "w1", 1, 60.0)[0]
        assert journal.fail([Failure(job.id, job.lease_id, f"OSError: {HOSTILE} {n}", JobState.READY,
                                     traceback=f"Traceback (most recent call last):\n  line {n}\n{HOSTILE}")]) == 1
    job = journal.lease(["q"], "w1", 1, 60.0)[0]
    assert journal.complete([(job.id, job.lease_id)], results={"x": KeptResult(msgpack.packb({"n": 3}), 3600)}) == 1
    text = setup.ok("jobs", "show", "x").stdout
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text  # nothing reaches the terminal raw
    lines = text.splitlines()
    assert lines[0] == "job x" and lines[1] == "  state     succeeded"
    assert "  args      [1, 'bad\\x1b[2J\\x1b]0;owned\\x07\\rtext']" in lines
    assert "  kwargs    {'to': 'a@b.c'}" in lines
    assert "  attempts  3 of 3" in lines and any(line.startswith("  result    {'n': 3}  (kept until ") for line in lines)
    errors = [line for line in lines if line.startswith("    attempt ")]
    assert len(errors) == 2 and errors[0].endswith(": OSError: bad\\x1b[2J\\x1b]0;owned\\x07\\x0dtext 1"), errors
    assert lines[lines.index("  last traceback:") + 1:] == [
        "    Traceback (most recent call last):", "      line 2", "    bad\\x1b[2J\\x1b]0;owned\\x07\\x0dtext"]
    detail = json.loads(setup.ok("jobs", "show", "x", "--json").stdout)
    assert (detail["args"], detail["kwargs"], detail["result"]) == ([1, HOSTILE], {"to": "a@b.c"}, {"n": 3})
    assert [(e["attempt"], e["error"]) for e in detail["errors"]] == [
        (1, f"OSError: {HOSTILE} 1"), (2, f"OSError: {HOSTILE} 2")]
    assert detail["lease"] is None and detail["last_traceback"].endswith(HOSTILE)

    add(journal, "held", data=b"\xc1not msgpack")
    journal.lease(["q"], "w-owner", 1, 60.0)
    held = setup.ok("jobs", "show", "held").stdout
    assert "  payload   not msgpack (" in held and "  lease     w-owner (lease " in held
    assert json.loads(setup.ok("jobs", "show", "held", "--json").stdout)["lease"]["owner"] == "w-owner"
    missing = setup.run("jobs", "show", "nope")
    assert missing.returncode == EXIT_CONFIG and missing.stderr.startswith("actorq jobs show: no job 'nope'")


def test_jobs_retry_by_id_and_every_dead_job_in_batches(setup: Setup) -> None:
    journal = setup.journal
    make_dead(journal, [f"d{n}" for n in range(5)])
    make_dead(journal, ["e0"], queue="emails")
    add(journal, "live")
    one = setup.run("jobs", "retry", "d0", "live", "nope")
    assert one.returncode == EXIT_CONFIG  # an unknown id; the others were handled
    assert one.stdout.splitlines() == ["job d0 retried: ready, with fresh attempts",
                                       "job live is ready, not dead or failed: left as it is"]
    assert one.stderr.startswith("actorq jobs retry: no job 'nope'") and one.stderr.count("\n") == 1
    every = setup.ok("jobs", "retry", "--all-dead", "--queue", "q", "--batch", "2")
    assert every.stdout == "retried 4 dead jobs of queue 'q': ready again, with fresh attempts\n"
    assert "actorq jobs retry: 2 retried so far" in every.stderr  # the progress line
    assert journal.counts()["q"] == {"ready": 6} and journal.counts()["emails"] == {"dead": 1}
    assert setup.ok("jobs", "retry", "--all-dead").stdout.startswith("retried 1 dead job:")
    info = journal.get("d3")
    assert info is not None and info.attempts == 0 and info.errors == ["ValueError: boom"]  # history kept
    both = setup.run("jobs", "retry", "d1", "--all-dead")
    assert both.returncode == EXIT_CONFIG and "not both" in both.stderr


def test_jobs_cancel_takes_several_ids(setup: Setup) -> None:
    journal = setup.journal
    add(journal, "c0")
    add(journal, "c1", run_at=time.time() + 3600)
    make_dead(journal, ["d0"])
    result = setup.run("jobs", "cancel", "c0", "c1", "d0", "nope")
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert result.stdout.splitlines() == ["job c0 cancelled", "job c1 cancelled",
                                          "job d0 had already finished (dead): nothing to cancel"]
    assert result.stderr.startswith("actorq jobs cancel: no job 'nope'")
    assert journal.counts() == {"q": {"cancelled": 2, "dead": 1}}


def test_queues_list_shows_each_state_and_the_oldest_ready_age_and_clear_deletes_waiting_jobs(
        setup: Setup) -> None:
    journal = setup.journal
    for n in range(5):
        add(journal, f"r{n}")
    add(journal, "s0", run_at=time.time() + 3600)
    add(journal, "l0")  # leased below: its worker's, never cleared
    make_dead(journal, ["d0"], queue="other")
    journal.lease(["q"], "w1", 1, 60.0)  # takes r0, the first by id
    journal.pause_queue("other")
    listing = json.loads(setup.ok("queues", "list", "--json").stdout)["queues"]
    assert listing["q"]["states"] == {"ready": 5, "scheduled": 1, "leased": 1}
    assert listing["q"]["paused"] is False and listing["q"]["oldest_ready_age"] >= 0
    minute = listing["other"].pop("last_minute")
    assert listing["other"] == {"paused": True, "ready": 0, "states": {"dead": 1}, "oldest_ready_age": None}
    # its job was leased and went dead within the last minute; q leased one and finished none
    assert (minute["finished"], minute["failed"], minute["leased"]) == (1, 1, 1)
    assert 60 <= minute["seconds"] <= 75 and minute["wait_max"] >= 0 and minute["per_second"] > 0
    q_minute = listing["q"]["last_minute"]
    assert (q_minute["finished"], q_minute["leased"], q_minute["per_second"]) == (0, 1, 0)
    assert q_minute["wait_mean"] == q_minute["wait_max"] >= 0
    table = setup.ok("queues", "list").stdout.splitlines()
    assert table[0].split() == ["queue", "state", "blocked", "scheduled", "ready", "leased", "retry", "succeeded",
                                "failed", "dead", "cancelled", "oldest", "ready", "done/min", "failed/min",
                                "wait", "avg", "wait", "max"]
    assert table[1].split()[:11] == ["other", "paused", "0", "0", "0", "0", "0", "0", "0", "1", "0"]
    assert [0.8 <= float(cell) <= 1.0 for cell in table[1].split()[12:14]] == [True, True]  # 1 in 60-70 s
    assert table[2].split()[:6] == ["q", "running", "0", "1", "5", "1"]
    assert table[2].split()[12:14] == ["0", "0"] and table[2].split()[14].endswith("ms")

    refused = setup.run("queues", "clear", "q")
    assert refused.returncode == EXIT_CONFIG and "add --yes" in refused.stderr
    assert journal.counts()["q"]["ready"] == 5  # nothing deleted without --yes
    cleared = setup.ok("queues", "clear", "q", "--state", "ready", "--yes", "--batch", "2")
    assert cleared.stdout == "cleared queue 'q': deleted 5 jobs (ready)\n"
    assert "actorq queues clear: 2 deleted so far" in cleared.stderr
    assert journal.counts()["q"] == {"scheduled": 1, "leased": 1}
    assert setup.ok("queues", "clear", "q", "--yes").stdout == "cleared queue 'q': deleted 1 job (blocked, scheduled, ready, retry)\n"
    assert journal.counts()["q"] == {"leased": 1} and journal.counts()["other"] == {"dead": 1}


@pytest.mark.parametrize(("argv", "message"), [
    (["jobs", "list", "--limit", "0"], "actorq jobs list: argument --limit: expected an integer from 1 to 10000, got '0'"),
    (["jobs", "list", "--limit", "10001"], "argument --limit: expected an integer from 1 to 10000, got '10001'"),
    (["jobs", "list", "--limit", "1e3"], "argument --limit: expected an integer from 1 to 10000, got '1e3'"),
    (["jobs", "list", "--state", "lost"], "argument --state: expected a state, one of scheduled, ready, "),
    (["jobs", "list", "--after", ""], "argument --after: expected a cursor (a job id) of 1 to 255 characters, got 0"),
    (["jobs", "list", "--queue", "q" * 256], "argument --queue: expected a queue name of 1 to 255 characters"),
    (["jobs", "retry", "--all-dead", "--batch", "0"], "argument --batch: expected an integer from 1 to 100000"),
    (["queues", "clear", "q", "--state", "leased"], "argument --state: expected a waiting state, one of "
                                                   "blocked, scheduled, ready, retry (a leased job is its worker's"),
    (["queues", "clear", "q", "--batch", "100001"], "argument --batch: expected an integer from 1 to 100000"),
    (["health", "--timeout", "0"], "argument --timeout: expected seconds > 0 and <= 3600"),
    (["jobs", "show"], "the following arguments are required: ID"),
])
def test_bad_flags_are_one_line_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                argv: list[str], message: str) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "sqlite:///{tmp_path / "never.db"}"\n')
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--config", str(topology)])
    assert exited.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("command", [("jobs", "list"), ("jobs", "show"), ("jobs", "retry"), ("jobs", "cancel"),
                                     ("jobs", "prune"), ("queues", "list"), ("queues", "pause"),
                                     ("queues", "resume"), ("queues", "clear"), ("health",)])
def test_help_of_each_command_has_an_example(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"actorq {' '.join(command)}" in out and "--config" in out, out


def test_listings_print_json_everywhere(tmp_path: Path) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\n')
    open_journal(f"sqlite:///{tmp_path / 'j.db'}").close()
    assert json.loads(actorq(topology, "jobs", "list", "--json").stdout) == {"jobs": [], "next": None}
    assert json.loads(actorq(topology, "queues", "list", "--json").stdout) == {"queues": {}}


def test_health_says_why_in_one_line_and_exits_0_only_with_a_node_and_a_journal_that_answer(topology) -> None:
    from node_process import NodeProcess
    from socket_support import wait_for_node

    topo = topology("", processes=1, name="probe")
    missing = actorq(topo.toml_path, "health")
    assert missing.returncode == EXIT_FAILURE and missing.stdout == ""
    assert missing.stderr.startswith("unhealthy: node: ") and missing.stderr.count("\n") == 1, missing.stderr
    node = NodeProcess(topo, 1, "--quiet")
    try:
        wait_for_node(Path(topo.config.node_file), 1, node.output)
        healthy = actorq(topo.toml_path, "health")
        assert healthy.returncode == EXIT_OK, healthy.stderr
        assert healthy.stdout.startswith(f"ok: node probe (pid {node.pid}) ") and "answers" in healthy.stdout
        # the same node answering, beside a journal that does not (a PostgreSQL server that is down)
        other = topo.dir / "elsewhere"
        other.mkdir()
        (other / "topology.toml").write_text('[node]\nname = "probe"\n[journal]\n'
                                             'url = "postgresql://postgres@127.0.0.1:1/actorq"\nconnect_retry_for = 0.2\n')
        (other / ".actorq-probe.node").write_text(Path(topo.config.node_file).read_text())
        down = actorq(other / "topology.toml", "health")
        assert down.returncode == EXIT_JOURNAL, down.stderr
        assert down.stderr.startswith("unhealthy: journal: ") and down.stderr.count("\n") == 1, down.stderr
    finally:
        node.proc.terminate()
    assert node.proc.wait(timeout=60) == 0, node.output()[-2000:]
    gone = actorq(topo.toml_path, "health")
    assert gone.returncode == EXIT_FAILURE and gone.stderr.startswith("unhealthy: node: ")


def test_jobs_show_says_what_it_cannot_show_and_never_prints_invalid_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "{url}"\n')
    journal = open_journal(url)
    try:  # arguments nested 5,000 deep: past what msgpack, repr or json will take
        add(journal, "deep", data=b"\x92" + b"\x91" * 5000 + b"\x90\x80")
        add(journal, "nan", data=payload(float("nan"), float("inf"), b"\x00\xff"))
    finally:
        journal.close()
    shown = actorq(topology, "jobs", "show", "deep")
    assert shown.returncode == EXIT_OK, shown.stderr
    assert "  payload   " in shown.stdout and "Traceback" not in shown.stderr
    def strict(text: str) -> Any:  # JSON as other languages read it: NaN and Infinity are not JSON
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))

    assert strict(actorq(topology, "jobs", "show", "deep", "--json").stdout)["payload_problem"]
    nan = strict(actorq(topology, "jobs", "show", "nan", "--json").stdout)
    assert nan["args"] == ["nan", "inf", {"bytes": "00ff"}]
