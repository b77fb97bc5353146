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


def test_the_memory_row_leaves_the_ledgers_own_pages_out(tmp_path: Path) -> None:
    """The ledger is the measurement's shared map, and a soak writes 8 bytes a job into it:
    the pages a process touched there are the bench's, not the process's memory."""
    code = f"""
import importlib.util, json, os, pathlib, psutil
spec = importlib.util.spec_from_file_location("rows", {str(ROWS)!r})
rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rows)
path = pathlib.Path({str(tmp_path / "ledger")!r})
ledger = rows.Ledger.create(path, 1_000_000)
before = rows._memory([os.getpid()], path)[0]
for i in range(0, 1_000_000, 512):  # a write on each page of one of its arrays: 8 MB
    ledger.mark_enqueued(i)
after = rows._memory([os.getpid()], path)[0]
print(json.dumps([before, after, psutil.Process().memory_info().rss / 1e6]))
"""
    before, after, rss = run_json("-c", code)
    assert rss - after > 7.5  # the touched ledger pages are resident, and left out
    assert abs(after - before) < 2.0
