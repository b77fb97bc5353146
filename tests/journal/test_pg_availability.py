"""The PostgreSQL tests fail when the server is missing, unless ACTORQ_SKIP_PG=1 says to skip them.

CI has a server, so a PostgreSQL test that quietly skipped there would hide a
broken backend; a developer without PostgreSQL opts out explicitly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from journal_support import closed_port

ROOT = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/journal/test_contract.py::test_b6_enqueue_of_the_same_id_is_a_no_op"


def _run_pytest(**env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ACTORQ_SKIP_PG"}
    full_env.update(env, ACTORQ_TEST_PG_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_TEST],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(150)
def test_an_unreachable_server_fails_the_postgres_tests_unless_skipped_on_purpose() -> None:
    failed = _run_pytest()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 passed, 1 error" in failed.stdout  # the SQLite half still ran; the fixture failed
    assert "PostgreSQL is not reachable" in failed.stdout and "ACTORQ_SKIP_PG=1" in failed.stdout

    skipped = _run_pytest(ACTORQ_SKIP_PG="1")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 passed, 1 skipped" in skipped.stdout
