"""actorq through the bench's adapter contract, and actorq's own rows: real nodes, real
worker processes, a real SQLite file; tiny runs, counted with the harness's ledger."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
ADAPTER = BENCH / "peers" / "actorq.py"
ROWS = BENCH / "peers" / "actorq_rows.py"
sys.path.insert(0, str(BENCH / "harness"))

from peer import Result  # noqa: E402

FIELDS = {f.name for f in dataclasses.fields(Result)}


def run_json(*argv: object, out: Path | None = None) -> dict:
    done = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text() if out else done.stdout)


@pytest.mark.parametrize("phase, jobs", [("drain", 300), ("e2e", 200)])
def test_the_adapter_runs_every_job_once_and_leaves_none(tmp_path: Path, phase: str, jobs: int) -> None:
    out = tmp_path / "r.json"
    r = run_json(ADAPTER, "run", "--phase", phase, "--jobs", jobs, "--variant", "sqlite-full",
                 "--workdir", tmp_path / "w", "--out", out, "--timeout", "60", out=out)
    assert r["error"] == ""
    assert (r["system"], r["variant"], r["phase"], r["jobs"]) == ("actorq", "sqlite-full", phase, jobs)
    assert (r["lost"], r["duplicated"], r["strays"], r["remaining"]) == (0, 0, 0, 0)
    assert r["drain_per_s" if phase == "drain" else "e2e_per_s"] > 0


def test_the_adapter_says_what_each_variant_keeps() -> None:
    info = run_json(ADAPTER, "info")
    assert info["name"] == "actorq" and info["has_batch"] and info["unavailable"] is None
    assert info["classes"] == {"sqlite-full": "fsync", "sqlite-normal": "process", "postgresql": "fsync"}


def test_list_names_every_row_with_its_needs_and_class() -> None:
    rows = {r["row"]: r for r in run_json(ROWS, "list")}
    assert set(rows) == {"tell-sqlite-full", "tell-sqlite-normal", "tell-postgresql", "producers4-sqlite-full",
                         "batched-sqlite-full", "nodes1-postgresql", "nodes2-postgresql", "memory-sqlite-full",
                         "rerun-sqlite-full"}
    assert rows["tell-postgresql"]["needs"] == ["postgresql"] and rows["tell-sqlite-full"]["needs"] == []
    assert rows["tell-sqlite-normal"]["class"] == "process" and all(r["what"] for r in rows.values())


def test_a_tell_row_writes_a_result_with_no_loss(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = run_json(ROWS, "run", "tell-sqlite-full", "--jobs", 500, "--workdir", tmp_path / "w", "--out", out,
                 "--timeout", "60", out=out)
    assert set(r) == FIELDS
    assert r["error"] == "" and (r["system"], r["variant"], r["jobs"]) == ("actorq", "tell-sqlite-full", 500)
    assert (r["lost"], r["duplicated"], r["strays"], r["remaining"]) == (0, 0, 0, 0)
    assert r["e2e_per_s"] > 0 and r["rate_limit"] == pytest.approx(r["e2e_per_s"] / 2)
    assert 0 < r["p50_ms"] <= r["p99_ms"]


def test_a_postgresql_row_without_a_url_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROWS), "run", "nodes2-postgresql", "--jobs", "10",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "nodes2-postgresql needs --pg-url" in done.stderr
