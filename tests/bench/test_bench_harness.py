"""``python -m bench``, end to end through its command line, on the self-test peer and small fakes.

The self-test peer (bench/harness/selftest_peer.py) is a real queue on a
SQLite file with real worker processes: its ``drops`` variant loses job 3 and
``repeats`` runs job 5 twice, so the harness's loss and duplicate counting is
checked on real runs. actorq's special rows and the limit rows are fakes
written here (the real ones are too slow for the suite) that print fixed
figures, so the targets block has known ratios. No assertion is on a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.harness import report, servers, venvs  # noqa: E402

FAKE_ROWS = '''
import argparse, json, sys
ROWS = {
    "tell-sqlite-full": {"e2e_per_s": 1000.0, "p50_ms": 0.5, "p99_ms": 2.0},
    "tell-sqlite-normal": {"e2e_per_s": 1.0e9},
    "producers4-sqlite-full": {"e2e_per_s": 500.0},
    "memory-sqlite-full": {"extra": {"idle_rss_mb": 70.0, "load_rss_mb": 90.0}},
}
if sys.argv[1] == "list":
    print(json.dumps([{"row": name, "needs": [], "what": "fake " + name} for name in ROWS]))
else:
    p = argparse.ArgumentParser()
    p.add_argument("cmd"); p.add_argument("row"); p.add_argument("--jobs", type=int)
    p.add_argument("--workdir"); p.add_argument("--out"); p.add_argument("--pg-url"); p.add_argument("--timeout")
    a = p.parse_args()
    result = {"system": "actorq", "variant": a.row, "phase": "run", "jobs": a.jobs, "lost": 0, "duplicated": 0}
    result.update(ROWS[a.row])
    open(a.out, "w").write(json.dumps(result))
'''

FAKE_LIMIT = '''
import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--shape"); p.add_argument("--jobs", type=int); p.add_argument("--workdir"); p.add_argument("--out")
p.add_argument("--timeout", type=float)
a = p.parse_args()
rate = 1250.0 if a.shape == "per-job" else 5000.0
open(a.out, "w").write(json.dumps({"system": "limit", "variant": a.shape, "phase": "run", "jobs": a.jobs,
                                   "e2e_per_s": rate, "lost": 0, "duplicated": 0}))
'''

ADAPTER = '''
import sys
from pathlib import Path
sys.path.insert(0, {harness!r})
from peer import Adapter, main
REQUIREMENTS = {requirements!r}

class Fake(Adapter):
    name = {name!r}
    variants = {{"only": "fake"}}
    classes = {{"only": "fsync"}}
    needs = {needs!r}

if __name__ == "__main__":
    main(Fake)
'''


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``peers/`` with the self-test peer, fake actorq rows and two fake adapters; ``limit.py`` beside it."""
    base = tmp_path_factory.mktemp("bench")
    peers = base / "peers"
    peers.mkdir()
    (peers / "selftest.py").symlink_to(ROOT / "bench" / "harness" / "selftest_peer.py")
    (peers / "selftest_app.py").write_text("raise SystemExit('an app module is never run')\n")
    (peers / "actorq_rows.py").write_text(FAKE_ROWS)
    (base / "limit.py").write_text(FAKE_LIMIT)
    harness = str(ROOT / "bench" / "harness")
    (peers / "pinned.py").write_text(ADAPTER.format(harness=harness, requirements=["nothing-such==1.0"],
                                                    name="pinned", needs=()))
    (peers / "needsredis.py").write_text(ADAPTER.format(harness=harness, requirements=[], name="needsredis",
                                                        needs=("redis",)))
    return base


def bench(layout: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", "--peers-dir", str(layout / "peers"),
                           "--cache", str(layout / "cache"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def table_row(stdout: str, system: str, variant: str) -> list[str]:
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0] == system and cells[1] == variant:
            return cells
    raise AssertionError(f"no row {system}:{variant} in\n{stdout}")


@pytest.fixture(scope="module")
def full_run(layout: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """One run over everything in the layout (tiny N; the lost job waits for the 1 s timeout)."""
    out = layout / "reports"
    # no redis-server on PATH: the Redis peer must say so instead of running
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    done = bench(layout, "--jobs", "40", "--timeout", "1", "--no-install", "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    reports = sorted(out.glob("bench-*.json"))
    assert len(reports) == 1 and len(list(out.glob("bench-*.md"))) == 1
    return done, json.loads(reports[0].read_text())


def rows_of(data: dict) -> dict[str, dict]:
    return {f"{r['system']}:{r['variant']}": r for r in data["rows"]}


def test_exact_run_has_rates(full_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    done, data = full_run
    cells = table_row(done.stdout, "selftest", "exact")
    enqueue, batched, drain, e2e, latency, lost_dup = cells[3:9]
    assert all(c.replace(",", "").isdigit() for c in (enqueue, batched, drain, e2e)), cells
    assert "/" in latency and lost_dup == "0 / 0"
    fig = rows_of(data)["selftest:exact"]["figures"]
    assert fig["lost"] == 0 and fig["duplicated"] == 0 and fig["e2e"] > 0 and fig["p50"] is not None
    assert set(rows_of(data)["selftest:exact"]["phases"]) == {"drain", "drain-batch", "e2e", "e2e-paced"}


def test_lost_job_is_reported_without_a_rate(full_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    done, data = full_run
    cells = table_row(done.stdout, "selftest", "drops")
    assert cells[8] == "LOST 1 / 0"
    assert cells[3:8] == ["", "", "", "", ""]  # no rate, no latency
    row = rows_of(data)["selftest:drops"]
    assert row["figures"]["lost"] == 1 and row["figures"]["e2e"] is None and row["figures"]["drain"] is None
    assert all(r["lost"] == 1 for rs in row["phases"].values() for r in rs)
    assert "e2e-paced" not in row["phases"]  # no peak, so no half of it


def test_a_phase_that_ran_nothing_failed_rather_than_lost() -> None:
    ran = {"jobs": 40, "lost": 0, "duplicated": 0, "enqueue_per_s": 900.0, "drain_per_s": 800.0, "round": 1}
    nothing = {"jobs": 40, "lost": 40, "duplicated": 0, "error": "RuntimeError: worker exited with 1\nboom",
               "round": 1}
    row = {"system": "stalled", "variant": "only", "kind": "peer", "class": "fsync", "status": "",
           "storage": "", "durability": "", "phases": {"drain": [ran], "e2e": [nothing]}}
    row["figures"] = fig = report.figures(row)
    assert fig["failed"] == 1 and fig["lost"] == 0 and fig["drain"] == 800.0 and fig["e2e"] is None
    text = report.text({"rows": [row], "targets": report.targets([row])})
    assert "1 phase(s) failed" in text and "LOST" not in text
    assert "stalled:only: e2e (round 1): RuntimeError: worker exited with 1 … boom" in text


def test_duplicate_is_shown(full_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    done, data = full_run
    assert table_row(done.stdout, "selftest", "repeats")[8] == "0 / 1"
    row = rows_of(data)["selftest:repeats"]
    assert row["figures"]["duplicated"] == 1 and row["figures"]["e2e"] > 0


def test_rows_that_cannot_run_say_why(full_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    done, data = full_run
    rows = rows_of(data)
    assert rows["pinned:only"]["status"].startswith("not installed: no virtualenv")
    assert rows["needsredis:only"]["status"] == "needs redis-server (not installed)"
    assert "needs redis-server (not installed)" in table_row(done.stdout, "needsredis", "only")[2]
    assert "selftest_app" not in json.dumps(data["rows"])
    assert "Traceback" not in done.stderr


def test_special_rows_targets_and_ratio(full_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    done, data = full_run
    rows = rows_of(data)
    assert rows["actorq:tell-sqlite-full"]["class"] == "fsync"
    assert rows["actorq:tell-sqlite-normal"]["class"] == "process"
    assert table_row(done.stdout, "limit", "per-job")[6] == "1,250"
    # the self-test peer is in class "process", where the fake actorq row does 1e9 jobs/s
    assert table_row(done.stdout, "selftest", "exact")[9].endswith("×")
    targets = {t["target"]: t for t in data["targets"]}
    assert targets["embedded tell / per-job limit"]["measured"] == pytest.approx(0.8)
    assert targets["embedded tell / per-job limit"]["met"] is True
    assert targets["4 producers / embedded tell"]["measured"] == pytest.approx(0.5)
    assert targets["tell p50 ms at half peak"]["met"] is True
    assert targets["idle RSS MB, node + 2 workers"]["measured"] == 70.0
    assert targets["PostgreSQL / SQLite embedded"]["met"] is None
    assert "actorq:memory-sqlite-full: idle_rss_mb 70, load_rss_mb 90" in done.stdout
    assert "PostgreSQL / SQLite embedded" in done.stdout and "not measured" in done.stdout


def test_markdown_report_and_readme_section(full_run: tuple[subprocess.CompletedProcess[str], dict],
                                            layout: Path, tmp_path: Path) -> None:
    md = next((layout / "reports").glob("bench-*.md")).read_text()
    assert "| selftest" in md and "LOST 1" in md and "Python" in md
    source = next((layout / "reports").glob("bench-*.json"))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Speed\n\n{report.BEGIN}\nold\n{report.END}\n\n## Next\n")
    report.rewrite_readme(readme, report.load(source), "r.json")
    text = readme.read_text()
    assert "old" not in text and "LOST 1" in text and text.endswith(f"{report.END}\n\n## Next\n")
    assert (ROOT / "README.md").read_text().count(report.BEGIN) == 1


def test_only_narrows_and_rounds_alternate(layout: Path, tmp_path: Path) -> None:
    done = bench(layout, "--only", "actorq:tell-*", "--only", "limit:per-job", "--jobs", "10", "--repeat", "2",
                 "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    data = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    assert sorted(f"{r['system']}:{r['variant']}" for r in data["rows"]) == [
        "actorq:tell-sqlite-full", "actorq:tell-sqlite-normal", "limit:per-job"]
    assert all([r["round"] for r in row["phases"]["run"]] == [1, 2] for row in data["rows"])
    started = [line.split()[:2] for line in done.stderr.splitlines() if line.endswith("jobs ...")]
    first = [label for round_no, label in started if round_no == "[1]"]
    second = [label for round_no, label in started if round_no == "[2]"]
    assert len(first) == 3 and second == first[::-1]
    listed = bench(layout, "--list", "--only", "selftest:e*", "--only", "limit:*")
    assert listed.returncode == 0 and listed.stdout.split("\n")[:3] == [
        "selftest:exact  [process]", "limit:per-job  [fsync]", "limit:batched  [fsync]"]
    nothing = bench(layout, "--only", "nosuch", "--out", str(tmp_path))
    assert nothing.returncode == 2 and nothing.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("args, flag", [
    (["--jobs", "0"], "--jobs"), (["--jobs", "many"], "--jobs"), (["--repeat", "0"], "--repeat"),
    (["--timeout", "nan"], "--timeout"), (["--timeout", "-1"], "--timeout"), (["--frobnicate"], "--frobnicate"),
    (["--redis-url", "http://x"], "--redis-url"), (["--pg-url", "postgresql://h:99999/x"], "--pg-url"),
])
def test_bad_flag_is_one_line(layout: Path, args: list[str], flag: str) -> None:
    done = bench(layout, *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and flag in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_requirements_are_read_without_importing(tmp_path: Path) -> None:
    path = tmp_path / "peer.py"
    path.write_text("import nothing_such\nREQUIREMENTS = ['a==1', \"b[x]==2\"]\n")
    assert venvs.read_requirements(path) == ["a==1", "b[x]==2"]
    path.write_text("REQUIREMENTS: list[str] = []\n")
    assert venvs.read_requirements(path) == []
    path.write_text("x = 1\n")
    assert venvs.read_requirements(path) == []
    for bad in ("REQUIREMENTS = ['a==' + '1']\n", "REQUIREMENTS = 'a==1'\n", "REQUIREMENTS = [1]\n",
                "REQUIREMENTS = ["):
        path.write_text(bad)
        with pytest.raises(venvs.RequirementsError):
            venvs.read_requirements(path)
    assert venvs.requirements_key(["a==1", "b==2"]) == venvs.requirements_key(["b==2", "a==1"])
    assert venvs.requirements_key(["a==1"]) != venvs.requirements_key(["a==2"])


def test_repository_adapters_declare_literal_requirements() -> None:
    for path in sorted((ROOT / "bench" / "peers").glob("*.py")):
        if not path.name.endswith("_app.py"):
            assert isinstance(venvs.read_requirements(path), list)


@pytest.mark.skipif(servers.redis_version() is None, reason="redis-server is not installed")
def test_redis_servers_start_in_both_modes_and_stop() -> None:
    started = [servers.start_redis(mode) for mode in servers.REDIS_MODES]
    try:
        for server in started:
            host, port, _ = server.address
            servers.resp(host, port, "SET", "k", "v")
            server.flush()
            assert servers.resp(host, port, "DBSIZE") == "0"
            given = servers.given_redis(server.url)  # what --redis-url reads from the server's config
            assert given.cls == server.cls
    finally:
        for server in started:
            server.stop()
    assert [s.proc.poll() is not None for s in started] == [True, True]
    assert not any(s.home.exists() for s in started if s.home)


@pytest.mark.skipif(servers.pg_bindir() is None, reason="PostgreSQL server binaries are not installed")
def test_postgres_cluster_gives_fresh_databases_and_is_removed() -> None:
    server = servers.start_postgres()
    home = server.home
    try:
        name, url = server.fresh_database()
        assert url.endswith(f"/{name}")
        out = subprocess.run(["psql", "-X", "-tA", "-d", url, "-c", "SHOW fsync"], capture_output=True, text=True)
        assert out.stdout.strip() == "on"
        server.drop_database(name)
    finally:
        server.stop()
    assert home is not None and not home.exists()


def test_an_adapter_names_the_python_it_needs_and_gets_a_venv_of_it(tmp_path: Path) -> None:
    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    path = tmp_path / "peer.py"
    path.write_text(f'PYTHON = "{this}"\nREQUIREMENTS = []\n')
    assert venvs.read_python(path) == this
    assert venvs.find_python(this) == sys.executable
    assert venvs.requirements_key(["a==1"], "3.99") != venvs.requirements_key(["a==1"], this)
    missing = venvs.ensure(tmp_path / "cache", "peer", ["a==1"], True, lambda line: None, "3.99")
    assert missing.python is None and "needs Python 3.99" in missing.problem
    path.write_text('PYTHON = 3.12\n')
    with pytest.raises(venvs.RequirementsError):
        venvs.read_python(path)


def test_a_phase_whose_jobs_stop_running_ends_as_stalled_before_its_timeout(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench" / "harness"))
    import peer
    from ledger import Ledger

    ledger = Ledger.create(tmp_path / "ledger", 10)
    ledger.record(0)  # one job ran, then nothing: the rest never will
    with pytest.raises(TimeoutError, match="stalled"):
        peer._wait_done(ledger, 10, timeout=60.0, what="drain", stall=0.2)
    ledger.close()
