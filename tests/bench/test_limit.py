"""bench/limit.py, the limit row: both shapes run every job once, its completion journaled."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

LIMIT = Path(__file__).resolve().parents[2] / "bench" / "limit.py"


@pytest.mark.parametrize("shape, batch", [("per-job", 1), ("batched", 100)])
def test_every_job_runs_once_and_its_completion_is_journaled(tmp_path: Path, shape: str, batch: int) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(LIMIT), "--shape", shape, "--jobs", "450", "--workdir",
                           str(tmp_path / "w"), "--out", str(out), "--timeout", "60"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["error"] == ""
    assert (r["system"], r["variant"], r["phase"], r["batch"]) == ("limit", shape, "e2e", batch)
    assert (r["lost"], r["duplicated"], r["strays"], r["remaining"]) == (0, 0, 0, 0)
    assert r["e2e_per_s"] > 0
    db = sqlite3.connect(tmp_path / "w" / "journal.db")
    assert db.execute("SELECT count(*), sum(state) FROM jobs").fetchone() == (451, 451)  # the warm-up job too
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_window_below_one_message_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(LIMIT), "--shape", "batched", "--jobs", "10", "--window", "5",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--window" in done.stderr
