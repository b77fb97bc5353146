"""The test PostgreSQL: the session's own throwaway server, and failing when none can be had.

Without ``ACTORQ_TEST_PG_URL`` a session starts its own server when a PostgreSQL
test first needs one and removes it at the end. The PostgreSQL tests fail when
no server can be had, unless ACTORQ_SKIP_PG=1 says to skip them: CI has the
binaries, so a PostgreSQL test that quietly skipped there would hide a broken
backend; a developer without PostgreSQL opts out explicitly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from journal_support import closed_port

ROOT = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/journal/test_journal_contract.py::test_b6_enqueue_of_the_same_id_is_a_no_op"


def _run_pytest(**env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ACTORQ_SKIP_PG"}
    full_env.update(env, ACTORQ_TEST_PG_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_TEST],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(150)
def test_an_unreachable_server_fails_the_postgres_tests_unless_skipped_on_purpose() -> None:
    # the two sessions side by side: each is an interpreter start, conftest and contract
    # module imports and compiles, all CPU, and the suite's slowest seconds on a busy machine
    with ThreadPoolExecutor(2) as pool:
        failing = pool.submit(_run_pytest)
        skipping = pool.submit(_run_pytest, ACTORQ_SKIP_PG="1")
        failed, skipped = failing.result(), skipping.result()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "2 passed, 1 error" in failed.stdout  # SQLite and memory still ran; the fixture failed
    assert "PostgreSQL is not reachable" in failed.stdout and "ACTORQ_SKIP_PG=1" in failed.stdout

    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "2 passed, 1 skipped" in skipped.stdout


HERE = Path(__file__).resolve().parent

SESSION = textwrap.dedent('''
    import os, socket, sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    import journal_support

    if os.environ.get("NO_BINARIES") == "1":
        journal_support._pg_ctl = lambda: None
    REPORT = Path({report!r})

    def test_nothing_answers_before_a_pg_test_needs_the_server():
        try:
            socket.create_connection(journal_support.PG_ADDRESS, timeout=5).close()
            answer = "answered"
        except ConnectionRefusedError:
            answer = "refused"
        REPORT.with_suffix(".before").write_text(answer)

    def test_one():
        journal_support.require_pg()
        import psycopg
        with psycopg.connect(journal_support.PG_URL) as conn:
            data = conn.execute("SHOW data_directory").fetchone()[0]
            port = conn.execute("SHOW port").fetchone()[0]
        REPORT.write_text(f"{{data}}\\n{{port}}\\n{{os.environ['ACTORQ_TEST_PG_URL']}}\\n{{journal_support.PG_URL}}")

    def test_two():
        journal_support.require_pg()
''')


def _run_session(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    report = tmp_path / "report.txt"
    (tmp_path / "test_session.py").write_text(SESSION.format(here=str(HERE), report=str(report)))
    environ = {k: v for k, v in os.environ.items() if k not in ("ACTORQ_TEST_PG_URL", "ACTORQ_SKIP_PG")}
    environ |= {"COLUMNS": "1000"} | env  # summary lines whole
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:pytest_postgresql", "-p", "no:cacheprovider",
                          "-q", "-rfEs", "test_session.py"],
                         cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)
    return out, report


def test_the_session_starts_its_own_server_only_when_needed_and_removes_it(tmp_path: Path) -> None:
    out, report = _run_session(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    data, port, child_url, url = report.read_text().splitlines()
    assert Path(data).parent.name.startswith("actorq-test-pg-")
    assert report.with_suffix(".before").read_text() == "refused"  # nothing there until a PostgreSQL test ran
    assert int(port) != 5432 and url.endswith(f":{port}/postgres")  # never the machine's own server
    assert child_url == url  # processes the tests start reach the same server
    assert not Path(data).parent.exists()  # removed when the session ended


@pytest.mark.parametrize("skip", ["", "1"])
def test_without_server_binaries_the_pg_tests_say_what_to_install(tmp_path: Path, skip: str) -> None:
    out, _ = _run_session(tmp_path, NO_BINARIES="1", **({"ACTORQ_SKIP_PG": skip} if skip else {}))
    summary = [line for line in out.stdout.splitlines() if line.startswith(("FAILED", "SKIPPED"))]
    if skip:
        assert out.returncode == 0 and "2 skipped" in out.stdout, out.stdout
    else:
        assert out.returncode == 1 and "2 failed" in out.stdout, out.stdout
    assert summary and all("apt install postgresql" in line for line in summary), summary
    if not skip:
        messages = {line.split(" - ", 1)[1] for line in out.stdout.splitlines() if line.startswith("FAILED")}
        assert len(messages) == 1, messages  # one message, the same for every PostgreSQL test
        assert "ACTORQ_SKIP_PG=1" in messages.pop()
