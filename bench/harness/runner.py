"""What ``python -m bench`` runs: the configurations, their phases, and the rounds over them.

A **configuration** is one row of the table: a peer's variant (times the
Redis mode, for a peer that needs Redis), one of actorq's special rows
(``bench/peers/actorq_rows.py``), or a limit row (``bench/limit.py``).

For a peer's configuration the phases are, in order (see bench/harness/peer.py):

1. ``drain``: N jobs enqueued one call each with no worker, then drained;
2. ``drain-batch``: the same with ``--batch 100`` (peers with a batch API);
3. ``e2e``: workers up, a producer process enqueues N as fast as it can;
4. ``e2e-paced``: the same at half of step 3's rate (the latency figures).

Each phase is one process of the adapter, with the peer's own interpreter,
a fresh work directory and ledger, an empty Redis database or a new
PostgreSQL database. ``--repeat`` runs every configuration that many rounds,
the order reversed every other round, and the report takes medians.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import servers as srv
from . import venvs
from .ledger import default_dir

HARNESS = Path(__file__).resolve().parent
BENCH = HARNESS.parent
BATCH = 100  # jobs per call in the batched phases
ROWS_SCRIPT = "actorq_rows.py"
LIMIT_SHAPES = ("per-job", "batched")
CLASS_ORDER = {"fsync": 0, "process": 1, "none": 2}


@dataclass
class Settings:
    """Everything a run is given (the command line, checked)."""

    jobs: int = 20_000
    repeat: int = 1
    only: list[str] = field(default_factory=list)
    cache: Path = Path("~/.cache/actorq-bench").expanduser()
    out: Path = Path("bench/reports")
    install: bool = True
    timeout: float = 300.0  # per phase, passed to the adapter
    redis_url: str | None = None
    pg_url: str | None = None
    peers_dir: Path = BENCH / "peers"
    limit_script: Path = BENCH / "limit.py"


@dataclass
class Config:
    """One row of the table, and how to run it."""

    system: str
    variant: str
    kind: str  # "peer", "rows" (actorq's special rows) or "limit"
    script: Path | None
    python: str | None
    storage: str = ""
    durability: str = ""
    cls: str = "fsync"
    needs: tuple[str, ...] = ()
    has_batch: bool = False
    redis_mode: str = ""
    status: str = ""  # why it does not run ("" = it runs)
    phases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``system:variant`` (and ``@redis-mode``)."""
        text = f"{self.system}:{self.variant}"
        return f"{text}@{self.redis_mode}" if self.redis_mode else text

    def to_json(self) -> dict[str, Any]:
        """The row as the JSON report stores it."""
        return {"system": self.system, "variant": self.variant, "kind": self.kind, "storage": self.storage,
                "durability": self.durability, "class": self.cls, "needs": list(self.needs),
                "has_batch": self.has_batch, "redis_mode": self.redis_mode, "status": self.status,
                "phases": self.phases}


def matches(patterns: list[str], system: str, variant: str | None = None) -> bool:
    """Whether ``--only`` selects ``system`` (or ``system:variant``); no pattern selects all."""
    if not patterns:
        return True
    names = [system] + ([f"{system}:{variant}"] if variant is not None else [])
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def _could_match(patterns: list[str], system: str) -> bool:
    """Whether some pattern may select a variant of ``system`` (before its variants are known)."""
    return not patterns or any(fnmatch.fnmatchcase(system, p.split(":", 1)[0]) for p in patterns)


def adapter_scripts(peers_dir: Path) -> list[Path]:
    """The adapter scripts in ``peers_dir``: files defining a subclass of ``Adapter`` (not ``*_app.py``)."""
    found = []
    for path in sorted(peers_dir.glob("*.py")):
        if path.name.endswith("_app.py") or path.name.startswith("_") or path.name == ROWS_SCRIPT:
            continue
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, OSError):
            found.append(path)  # reported as broken by `info`
            continue
        if any(isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", "")) == "Adapter"
                                                      for b in node.bases) for node in tree.body):
            found.append(path)
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HARNESS), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def peer_configs(settings: Settings, progress: Callable[[str], None]) -> list[Config]:
    """Every selected variant of every adapter in the peers folder, with its interpreter (venvs built here)."""
    configs: list[Config] = []
    for script in adapter_scripts(settings.peers_dir):
        stem = script.stem
        if not _could_match(settings.only, stem):
            continue
        try:
            requirements = venvs.read_requirements(script)
            version = venvs.read_python(script)
        except venvs.RequirementsError as exc:
            configs.append(Config(stem, "*", "peer", script, None, status=f"not installed: {exc}"))
            continue
        venv = venvs.ensure(settings.cache, stem, requirements, settings.install, progress, version)
        python = venv.python or sys.executable  # `info` needs no dependency in a well-made adapter
        try:
            done = subprocess.run([python, str(script), "info"], capture_output=True, text=True, timeout=120,
                                  env=_env(), stdin=subprocess.DEVNULL)
            info = json.loads(done.stdout) if done.returncode == 0 else None
            if not isinstance(info, dict):
                info = None
            problem = "" if info else _tail(done.stderr) or f"exit code {done.returncode}"
        except (subprocess.TimeoutExpired, ValueError) as exc:
            info, problem = None, f"{type(exc).__name__}: {exc}"
        if info is None:
            status = f"not installed: {venv.problem}" if venv.problem else f"info failed: {problem}"
            configs.append(Config(stem, "*", "peer", script, None, status=status))
            continue
        name = str(info.get("name") or stem)
        for variant, durability in dict(info.get("variants") or {}).items():
            if not matches(settings.only, name, variant):
                continue
            config = Config(name, variant, "peer", script, venv.python, storage=str(info.get("storage", "")),
                            durability=str(durability), cls=str((info.get("classes") or {}).get(variant, "fsync")),
                            needs=tuple((info.get("variant_needs") or {}).get(variant, info.get("needs") or ())),
                            has_batch=bool(info.get("has_batch")))
            if info.get("unavailable"):
                config.status = f"unavailable: {info['unavailable']}"
            elif venv.python is None:
                config.status = f"not installed: {venv.problem}"
            configs.append(config)
    return configs


def special_configs(settings: Settings) -> list[Config]:
    """actorq's special rows (from ``actorq_rows.py list``) and the limit rows."""
    configs: list[Config] = []
    rows = settings.peers_dir / ROWS_SCRIPT
    if _could_match(settings.only, "actorq"):
        if not rows.exists():
            if matches(settings.only, "actorq", "rows"):
                configs.append(Config("actorq", "rows", "rows", None, None,
                                      status=f"not available: {rows} not found"))
        else:
            try:
                done = subprocess.run([sys.executable, str(rows), "list"], capture_output=True, text=True,
                                      timeout=120, env=_env(), stdin=subprocess.DEVNULL)
                listed = json.loads(done.stdout) if done.returncode == 0 else None
                problem = "" if listed is not None else _tail(done.stderr)
            except (subprocess.TimeoutExpired, ValueError) as exc:
                listed, problem = None, f"{type(exc).__name__}: {exc}"
            if not isinstance(listed, list):
                configs.append(Config("actorq", "rows", "rows", rows, None,
                                      status=f"not available: {ROWS_SCRIPT} list failed: {problem}"))
            else:
                for item in listed:
                    name = str(item.get("row"))
                    if matches(settings.only, "actorq", name):
                        configs.append(Config("actorq", name, "rows", rows, sys.executable,
                                              storage=str(item.get("storage") or _row_storage(name)),
                                              durability=str(item.get("what", "")),
                                              cls=str(item.get("class") or _row_class(name)),
                                              needs=tuple(item.get("needs") or ())))
    if _could_match(settings.only, "limit"):
        for shape in LIMIT_SHAPES:
            if matches(settings.only, "limit", shape):
                ok = settings.limit_script.exists()
                configs.append(Config("limit", shape, "limit", settings.limit_script, sys.executable,
                                      storage="SQLite WAL, synchronous=FULL",
                                      durability=f"bare pipeline, {'one job' if shape == 'per-job' else '100 jobs'}"
                                                 " per message, no supervision", cls="fsync",
                                      status="" if ok else f"not available: {settings.limit_script} not found"))
    return configs


def _row_storage(name: str) -> str:
    """An actorq row's storage when its list does not say, from its name."""
    if "postgresql" in name:
        return "PostgreSQL (fsync=on, synchronous_commit=on)"
    if "sqlite-normal" in name:
        return "SQLite WAL, synchronous=NORMAL"
    return "SQLite WAL, synchronous=FULL" if "sqlite-full" in name else ""


def _row_class(name: str) -> str:
    """An actorq row's class when its list does not say: SQLite NORMAL survives a process crash only."""
    return "process" if "normal" in name else "fsync"


# -- servers ---------------------------------------------------------------------------
@dataclass
class Servers:
    """The servers this run uses (None: not available, ``*_problem`` says why)."""

    redis: list[srv.Redis] = field(default_factory=list)
    redis_problem: str = ""
    postgres: srv.Postgres | None = None
    postgres_problem: str = ""


def start_servers(settings: Settings, configs: list[Config], stack: ExitStack,
                  progress: Callable[[str], None]) -> Servers:
    """Start what the runnable configurations need; register each stop on ``stack``."""
    servers = Servers()
    needs = {need for c in configs if not c.status for need in c.needs}
    if "redis" in needs:
        if settings.redis_url:
            try:
                servers.redis.append(srv.given_redis(settings.redis_url))
            except srv.ServerError as exc:
                servers.redis_problem = str(exc)
        elif srv.redis_version() is None:
            servers.redis_problem = "needs redis-server (not installed)"
        else:
            for mode in srv.REDIS_MODES:
                try:
                    server = srv.start_redis(mode)
                except srv.ServerError as exc:
                    servers.redis_problem = f"needs redis-server ({exc})"
                    break
                stack.callback(server.stop)
                servers.redis.append(server)
                progress(f"started redis-server ({mode}) at {server.url}")
    if "postgresql" in needs:
        if settings.pg_url:
            try:
                servers.postgres = srv.given_postgres(settings.pg_url)
            except srv.ServerError as exc:
                servers.postgres_problem = str(exc)
        elif srv.pg_bindir() is None:
            servers.postgres_problem = "needs PostgreSQL (not installed)"
        else:
            try:
                servers.postgres = srv.start_postgres()
                stack.callback(servers.postgres.stop)
                progress(f"started PostgreSQL {servers.postgres.version} at {servers.postgres.url}")
            except (srv.ServerError, subprocess.TimeoutExpired) as exc:
                servers.postgres_problem = f"needs PostgreSQL ({exc})"
    return servers


def expand_redis(configs: list[Config], servers: Servers) -> list[Config]:
    """One configuration per Redis mode for the peers that need Redis; mark what cannot run."""
    out: list[Config] = []
    for config in configs:
        if not config.status and "postgresql" in config.needs and servers.postgres is None:
            config.status = servers.postgres_problem or "needs PostgreSQL"
        if config.status or "redis" not in config.needs:
            out.append(config)
            continue
        if not servers.redis:
            config.status = servers.redis_problem or "needs redis-server"
            out.append(config)
            continue
        for server in servers.redis:
            copy = Config(**{**config.__dict__, "phases": {}})
            copy.redis_mode = server.mode
            copy.cls = weaker(config.cls, server.cls)
            copy.storage = f"{config.storage}; {server.text}" if config.storage else server.text
            out.append(copy)
    return out


def weaker(a: str, b: str) -> str:
    """The weaker of two durability classes."""
    return max(a, b, key=lambda c: CLASS_ORDER.get(c, 2))


# -- running ----------------------------------------------------------------------------
class Runner:
    """Runs the configurations' phases as child processes; one instance per run."""

    def __init__(self, settings: Settings, servers: Servers, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.servers = servers
        self.progress = progress
        self.scratch = Path(tempfile.mkdtemp(prefix="actorq-bench-"))
        self._n = 0

    def close(self) -> None:
        """Remove the scratch folder."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    def run_config(self, config: Config, round_no: int) -> None:
        """Run every phase of ``config`` once (one round); results go to ``config.phases``."""
        if config.kind == "peer":
            plan: list[tuple[str, list[str]]] = [("drain", ["--phase", "drain"])]
            if config.has_batch:
                plan.append(("drain-batch", ["--phase", "drain", "--batch", str(BATCH)]))
            plan.append(("e2e", ["--phase", "e2e"]))
            for phase, args in plan:
                self._phase(config, phase, args, round_no)
            peak = [r for r in config.phases.get("e2e", [])[-1:] if r.get("e2e_per_s") and not r.get("lost")]
            if peak:
                rate = peak[0]["e2e_per_s"] / 2
                self._phase(config, "e2e-paced", ["--phase", "e2e", "--rate", f"{rate:.1f}"], round_no)
        elif config.kind == "rows":
            self._phase(config, "run", ["run", config.variant], round_no)
        else:
            self._phase(config, "run", ["--shape", config.variant], round_no)

    def _command(self, config: Config, args: list[str], workdir: Path, out: Path, ledger: Path) -> list[str]:
        assert config.script is not None and config.python is not None
        cmd = [config.python, str(config.script)]
        n = str(self.settings.jobs)
        if config.kind == "peer":
            cmd += ["run", *args, "--jobs", n, "--variant", config.variant, "--workdir", str(workdir),
                    "--out", str(out), "--ledger", str(ledger), "--timeout", f"{self.settings.timeout:g}"]
        else:
            cmd += [*args, "--jobs", n, "--workdir", str(workdir), "--out", str(out),
                    "--timeout", f"{self.settings.timeout:g}"]
        return cmd

    def _phase(self, config: Config, phase: str, args: list[str], round_no: int) -> None:
        self._n += 1
        workdir = self.scratch / f"{self._n:04d}-{config.system}-{phase}"
        workdir.mkdir(parents=True)
        out = workdir / "result.json"
        ledger = default_dir() / f"actorq-bench-{os.getpid()}-{self._n}.ledger"
        cmd = self._command(config, args, workdir, out, ledger)
        database = None
        started = time.monotonic()
        self.progress(f"[{round_no}] {config.label} {phase}: {self.settings.jobs:,} jobs ...")
        try:
            if config.redis_mode:
                server = next(s for s in self.servers.redis if s.mode == config.redis_mode)
                server.flush()
                cmd += ["--redis-url", server.url]
            if "postgresql" in config.needs and self.servers.postgres is not None:
                database, url = self.servers.postgres.fresh_database()
                cmd += ["--pg-url", url]
            result = self._run_child(config, phase, cmd, workdir, out)
        except (srv.ServerError, subprocess.TimeoutExpired, OSError) as exc:
            result = {"system": config.system, "variant": config.variant, "phase": phase,
                      "jobs": self.settings.jobs, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            if database is not None and self.servers.postgres is not None:
                try:
                    self.servers.postgres.drop_database(database)
                except (srv.ServerError, subprocess.TimeoutExpired):
                    pass
            ledger.unlink(missing_ok=True)
            shutil.rmtree(workdir, ignore_errors=True)
        result["round"] = round_no
        config.phases.setdefault(phase, []).append(result)
        self.progress(f"[{round_no}] {config.label} {phase}: {describe(result)} ({time.monotonic() - started:.1f} s)")

    def _run_child(self, config: Config, phase: str, cmd: list[str], workdir: Path, out: Path) -> dict[str, Any]:
        log = workdir / "adapter.log"
        limit = self.settings.timeout * 4 + 120  # the adapter's own deadlines come first
        with open(log, "wb") as sink:
            # a session of its own: a Ctrl-C at the terminal reaches the harness only, which then
            # sends the adapter one SIGINT (two could interrupt the adapter's own clean-up)
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=_env(), cwd=workdir, start_new_session=True)
            try:
                code = proc.wait(limit)
            except subprocess.TimeoutExpired:
                _stop_child(proc)
                return {"system": config.system, "variant": config.variant, "phase": phase,
                        "jobs": self.settings.jobs, "error": f"no result after {limit:.0f} s (stopped)"}
            except BaseException:  # Ctrl-C: let the adapter stop its workers, then make sure
                _stop_child(proc)
                raise
        if out.exists():
            try:
                return dict(json.loads(out.read_text()))
            except ValueError:
                pass
        text = _tail(log.read_text(errors="replace")) if log.exists() else ""
        return {"system": config.system, "variant": config.variant, "phase": phase, "jobs": self.settings.jobs,
                "error": f"exited with code {code} and no result: {text}"}


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (the adapter's finally blocks stop its workers), then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def describe(result: dict[str, Any]) -> str:
    """One progress line's figures for a phase result."""
    parts = []
    for key, label in (("enqueue_per_s", "enqueue"), ("drain_per_s", "drain"), ("e2e_per_s", "e2e")):
        if result.get(key):
            parts.append(f"{label} {result[key]:,.0f}/s")
    if result.get("p50_ms") is not None:
        parts.append(f"p50 {result['p50_ms']:.2f} ms p99 {result.get('p99_ms') or 0:.2f} ms")
    for key, value in (result.get("extra") or {}).items():
        parts.append(f"{key} {value:,.4g}")
    if result.get("lost"):
        parts.append(f"LOST {result['lost']}")
    if result.get("duplicated"):
        parts.append(f"duplicated {result['duplicated']}")
    if result.get("error"):
        parts.append(f"error: {result['error']}")
    return ", ".join(parts) or "no figures"


def run_all(settings: Settings, progress: Callable[[str], None]) -> tuple[list[Config], bool]:
    """Discover, set up, run every round; return the configurations with their results.

    Returns:
        The configurations, and True when a Ctrl-C (or SIGTERM) ended the
        rounds early: the results so far are kept, for a partial report.

    Raises:
        KeyboardInterrupt: interrupted before the rounds began (while installing).

    Servers are stopped before this returns or raises.
    """
    configs = peer_configs(settings, progress) + special_configs(settings)
    interrupted = False
    with ExitStack() as stack:
        servers = start_servers(settings, configs, stack, progress)
        configs = expand_redis(configs, servers)
        runnable = [c for c in configs if not c.status]
        runner = Runner(settings, servers, progress)
        stack.callback(runner.close)
        try:
            for round_no in range(1, settings.repeat + 1):
                order = runnable if round_no % 2 else list(reversed(runnable))
                for config in order:
                    runner.run_config(config, round_no)
        except KeyboardInterrupt:
            interrupted = True
    return configs, interrupted


__all__ = ["Config", "Runner", "Servers", "Settings", "adapter_scripts", "expand_redis", "matches",
           "peer_configs", "run_all", "special_configs", "start_servers", "weaker"]
