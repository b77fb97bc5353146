"""Every number on the command line at its extremes: one line naming the flag and its range, exit 2 (G12).

A flag's value is checked where argparse reads it, so a bad one never reaches the
topology, the journal or the OS: no journal file appears, and nothing prints a
traceback. A job's priority and max_attempts share their bounds with `NewJob`
(the journal's int4 columns).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actorq.journal.protocol import MAX_ATTEMPTS, MAX_CONCURRENCY_LIMIT, MAX_PRIORITY, MAX_UNIQUE_FOR, MIN_PRIORITY
from actorq.node.cli import MAX_COUNT, MAX_DELAY, MAX_WAIT, main
from actorq.node.constants import EXIT_CONFIG, EXIT_OK

pytestmark = pytest.mark.timeout(120)

HUGE = str(2**70)
TASKS = """
import actorq
registry = actorq.TaskRegistry()

@registry.task("flags.echo")
def echo(*args, **kwargs):
    return [args, kwargs]
"""


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    (tmp_path / "flag_tasks.py").write_text(TASKS)
    path = tmp_path / "topology.toml"
    path.write_text(f'[node]\ntasks = ["flag_tasks:registry"]\n[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\n')
    return path


def actorq_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actorq.node.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``actorq argv`` in this process; assert it exits 2; return its one line of stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


def enqueue_refused(capsys: pytest.CaptureFixture[str], topology: Path, flag: str, value: str) -> str:
    line = refused(capsys, "enqueue", "--config", str(topology), "flags.echo", f"{flag}={value}")
    assert not (topology.parent / "j.db").exists()  # refused before the journal was opened
    return line


@pytest.mark.parametrize("value", ["0", "-5", HUGE, str(MAX_COUNT + 1), "inf", "nan", "ten"])
def test_g12_count_is_from_1_to_its_bound(capsys: pytest.CaptureFixture[str], topology: Path, value: str) -> None:
    # before: --count -5 enqueued nothing and said so with exit 0; a huge one built jobs until memory ran out
    assert enqueue_refused(capsys, topology, "--count", value) == (
        f"actorq enqueue: argument --count: expected an integer from 1 to {MAX_COUNT}, got {value!r} "
        "(see actorq enqueue --help)")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e300", HUGE, str(MAX_DELAY + 1), "soon"])
def test_g12_delay_is_finite_non_negative_and_bounded(capsys: pytest.CaptureFixture[str], topology: Path,
                                                      value: str) -> None:
    # before: --delay nan failed in SQLite (NOT NULL constraint, exit 3); inf scheduled a job that never runs
    assert enqueue_refused(capsys, topology, "--delay", value) == (
        f"actorq enqueue: argument --delay: expected seconds from 0 to {MAX_DELAY:.0f}, got {value!r} "
        "(see actorq enqueue --help)")


@pytest.mark.parametrize("value", [str(MAX_PRIORITY + 1), str(MIN_PRIORITY - 1), HUGE, "99999999999999999999999",
                                   "nan", "1.5"])
def test_g12_priority_fits_the_journal_column(capsys: pytest.CaptureFixture[str], topology: Path, value: str) -> None:
    # before: 99999999999999999999999 was an OverflowError traceback from SQLite
    assert enqueue_refused(capsys, topology, "--priority", value) == (
        f"actorq enqueue: argument --priority: expected an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, "
        f"got {value!r} (see actorq enqueue --help)")


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_ATTEMPTS + 1), HUGE, "inf"])
def test_g12_max_attempts_is_at_least_1_and_bounded(capsys: pytest.CaptureFixture[str], topology: Path,
                                                    value: str) -> None:
    assert enqueue_refused(capsys, topology, "--max-attempts", value) == (
        f"actorq enqueue: argument --max-attempts: expected an integer from 1 to {MAX_ATTEMPTS}, got {value!r} "
        "(see actorq enqueue --help)")


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "-inf", HUGE, str(MAX_UNIQUE_FOR + 1), "1h"])
def test_unique_for_is_positive_finite_and_at_most_a_year(capsys: pytest.CaptureFixture[str], topology: Path,
                                                          value: str) -> None:
    assert enqueue_refused(capsys, topology, "--unique-for", value) == (
        f"actorq enqueue: argument --unique-for: expected seconds > 0 and <= {MAX_UNIQUE_FOR}, got {value!r} "
        "(see actorq enqueue --help)")


@pytest.mark.parametrize(("value", "problem"), [
    ("", "expected a non-empty unique key, got ''"),
    ("k" * 256, "a unique key may have at most 255 characters, got 256"),
])
def test_unique_key_is_a_name_that_fits_the_journal(capsys: pytest.CaptureFixture[str], topology: Path,
                                                    value: str, problem: str) -> None:
    assert enqueue_refused(capsys, topology, "--unique-key", value) == (
        f"actorq enqueue: argument --unique-key: {problem} (see actorq enqueue --help)")


def test_enqueue_with_a_unique_key_and_period_prints_the_holders_id(capsys: pytest.CaptureFixture[str],
                                                                     topology: Path) -> None:
    common = ["enqueue", "--config", str(topology), "flags.echo", "1"]
    assert main([*common, "--unique-key", "k", "--unique-for", str(MAX_UNIQUE_FOR)]) == EXIT_OK
    holder = capsys.readouterr().out.strip()
    assert main([*common, "--unique-key", "k"]) == EXIT_OK  # held: nothing added, the holder's id
    out, err = capsys.readouterr()
    assert out.strip() == holder and err == f"actorq enqueue: nothing added: job {holder} holds its unique key\n"
    # a period alone: the key is the task and its arguments; the count says what was added
    assert main([*common, "--unique-for", "0.001", "--count", "3"]) == EXIT_OK
    assert capsys.readouterr().out == ("enqueued 1 of 3 jobs of flags.echo on its task's queue; "
                                       "2 not added: their unique key was held\n")


@pytest.mark.parametrize("flag", ["--ordering-key", "--concurrency-key"])
@pytest.mark.parametrize(("value", "problem"), [
    ("", "expected a non-empty {what}, got ''"),
    ("k" * 256, "a {what} may have at most 255 characters, got 256"),
])
def test_flow_keys_are_names_that_fit_the_journal(capsys: pytest.CaptureFixture[str], topology: Path, flag: str,
                                                  value: str, problem: str) -> None:
    what = flag[2:].replace("-", " ")
    assert enqueue_refused(capsys, topology, flag, value) == (
        f"actorq enqueue: argument {flag}: {problem.format(what=what)} (see actorq enqueue --help)")


@pytest.mark.parametrize("value", ["0", "-1", "1.5", HUGE, str(MAX_CONCURRENCY_LIMIT + 1)])
def test_g12_concurrency_limit_is_bounded(capsys: pytest.CaptureFixture[str], topology: Path, value: str) -> None:
    line = enqueue_refused(capsys, topology, "--concurrency-limit", value)
    assert line.startswith("actorq enqueue: argument --concurrency-limit: ") and str(MAX_CONCURRENCY_LIMIT) in line


def test_a_limit_or_rule_without_a_concurrency_key_is_one_line(capsys: pytest.CaptureFixture[str],
                                                                topology: Path) -> None:
    assert main(["enqueue", "--config", str(topology), "flags.echo", "--on-conflict", "discard"]) == EXIT_CONFIG
    assert capsys.readouterr().err == "actorq enqueue: --concurrency-limit and --on-conflict need --concurrency-key\n"
    assert enqueue_refused(capsys, topology, "--on-conflict", "drop").startswith(
        "actorq enqueue: argument --on-conflict: invalid choice: 'drop'")


def test_enqueue_with_flow_keys_and_discard_says_what_was_not_added(capsys: pytest.CaptureFixture[str],
                                                                    topology: Path) -> None:
    both = ["enqueue", "--config", str(topology), "flags.echo", "--ordering-key", "o", "--concurrency-key", "c"]
    assert main(both) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        "actorq enqueue: a job takes one flow key: --ordering-key or --concurrency-key, not both\n")
    assert main(["enqueue", "--config", str(topology), "flags.echo", "1", "--ordering-key", "customer-42"]) == EXIT_OK
    assert capsys.readouterr().out.strip()
    common = ["enqueue", "--config", str(topology), "flags.echo", "1"]
    assert main([*common, "--concurrency-key", "tenant-7", "--concurrency-limit", "2", "--on-conflict", "discard",
                 "--count", "3"]) == EXIT_OK
    assert capsys.readouterr().out == ("enqueued 2 of 3 jobs of flags.echo on its task's queue; "
                                       "1 not added: their concurrency key had its limit of admitted jobs\n")
    assert main([*common, "--concurrency-key", "tenant-7", "--concurrency-limit", "2",
                 "--on-conflict", "discard"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == "" and err == ("actorq enqueue: nothing added: concurrency key 'tenant-7' has its limit of admitted "
                                 "jobs (--on-conflict discard)\n")
    assert main([*common, "--concurrency-key", "tenant-7", "--concurrency-limit", "2"]) == EXIT_OK  # block: added
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", HUGE, str(MAX_WAIT + 1)])
@pytest.mark.parametrize("command", ["tree", "status"])
def test_g12_node_timeout_is_positive_finite_and_bounded(capsys: pytest.CaptureFixture[str], topology: Path,
                                                         command: str, value: str) -> None:
    # before: `--timeout inf` reached the control socket's poll as int(inf * 1000): OverflowError
    assert refused(capsys, command, "--config", str(topology), f"--timeout={value}") == (
        f"actorq {command}: argument --timeout: expected seconds > 0 and <= {MAX_WAIT:.0f}, got {value!r} "
        f"(see actorq {command} --help)")


def test_g12_an_empty_queue_name_is_refused(capsys: pytest.CaptureFixture[str], topology: Path) -> None:
    assert enqueue_refused(capsys, topology, "--queue", "") == (
        "actorq enqueue: argument --queue: expected a non-empty queue name, got '' (see actorq enqueue --help)")


@pytest.mark.parametrize(("value", "problem"), [
    ("{bad", "expected a JSON object, e.g. '{\"to\": \"a@b.c\"}': Expecting property name"),
    ("[1]", "expected a JSON object, got '[1]'"),
    ("[" * 100_000, "JSON nested too deeply (100,000 characters)"),
])
def test_g12_a_bad_kwargs_names_the_flag(capsys: pytest.CaptureFixture[str], topology: Path,
                                         value: str, problem: str) -> None:
    # before: invalid JSON printed only the decoder's message, without saying it was --kwargs
    assert enqueue_refused(capsys, topology, "--kwargs", value).startswith(
        f"actorq enqueue: argument --kwargs: {problem}")


def test_g12_an_argument_nested_past_the_json_parser_is_refused(capsys: pytest.CaptureFixture[str],
                                                                topology: Path) -> None:
    line = refused(capsys, "enqueue", "--config", str(topology), "flags.echo", "[" * 100_000)
    assert line.startswith("actorq enqueue: argument args: JSON nested too deeply")


def test_g12_huge_priority_from_the_real_command_is_one_line_without_traceback(topology: Path) -> None:
    result = actorq_cmd("enqueue", "--config", str(topology), "flags.echo", "--priority", "99999999999999999999999",
                        cwd=topology.parent)
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.startswith("actorq enqueue: argument --priority: expected an integer from -2147483648 to "
                                    "2147483647, got '99999999999999999999999'")
    assert result.stderr.count("\n") == 1


def test_g12_every_flag_at_its_bounds_is_accepted(topology: Path) -> None:
    cwd = topology.parent
    common = ("enqueue", "--config", str(topology), "flags.echo", "1", '"two"', "--kwargs", '{"k": [3]}')
    low = actorq_cmd(*common, "--priority", str(MIN_PRIORITY), "--max-attempts", "1", "--delay", "0",
                     "--count", "2", cwd=cwd)
    assert low.returncode == EXIT_OK, low.stderr
    high = actorq_cmd(*common, "--priority", str(MAX_PRIORITY), "--max-attempts", str(MAX_ATTEMPTS),
                      "--delay", f"{MAX_DELAY:.0f}", "--queue", "q", cwd=cwd)
    assert high.returncode == EXIT_OK, high.stderr
    status = actorq_cmd("status", "--config", str(topology), "--json", cwd=cwd)
    report = json.loads(status.stdout)
    assert report["node"]["running"] is False
    assert report["queues"] == {"default": {"ready": 2}, "q": {"scheduled": 1}}

