"""actorq and every peer queue: one workload, one run, one table.

Run it from the repository root. What it does, in order:

1. Finds the adapters in bench/peers/ (one per peer queue) and builds each
   peer's own virtualenv under the cache folder from the pinned REQUIREMENTS
   in its adapter (once; later runs reuse it). A peer that does not install
   is shown as "not installed: <reason>". actorq's rows use this interpreter.
2. Starts what the peers need on loopback, when installed: two redis-servers
   (AOF appendfsync everysec, and no persistence: every Redis peer runs
   against both) and a throwaway PostgreSQL cluster (fsync on, a fresh
   database per phase). Everything it starts is stopped at the end, also on
   Ctrl-C or failure.
3. Runs every configuration, a progress line per phase (on stderr):
   peers: drain (N jobs enqueued with no worker, one call each, then drained;
   again with batches of 100 where the peer has a batch API), end to end
   (workers up, a separate producer process enqueues N as fast as it can),
   and end to end paced at half of that peak (latency p50/p99);
   actorq's special rows (bench/peers/actorq_rows.py: SQLite FULL and NORMAL,
   PostgreSQL, 4 producers, batched, 1 and 2 nodes, memory, SIGKILL-to-rerun);
   the limit rows (bench/limit.py: a bare pipeline, per job and batched).
4. Prints one table, grouped by durability class, with the ratio of actorq's
   best row of each class to every peer, then the speed targets as measured
   ratios (met / not met; never enforced). Every run counts lost and
   duplicated jobs; a configuration that lost a job shows "LOST n", no rate.
5. Writes bench-DATE.json (every phase result, the machine, the settings) and
   bench-DATE.md into --out.

How long: about 1 to 2 minutes per peer configuration at the default
--jobs 20000 (slow peers more), so about an hour for everything, plus the
first run's installs; a peer whose workers stop running jobs costs --timeout
per phase. Use --only and a smaller --jobs to look at one system.

Examples:
  python -m bench                                  # everything
  python -m bench --only 'huey*' --jobs 2000       # Huey's variants only
  python -m bench --only 'actorq:tell-*' --only 'limit:*' --repeat 3
  python -m bench --list                           # the names --only matches
  python -m bench --readme bench/reports/bench-20260101-120000.json
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import report, runner  # noqa: E402

MAX_JOBS = 10_000_000  # the ledger holds 100,000,000; a phase of more would take hours anyway


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"python -m bench: {message} (see --help)\n")


def _ranged(flag: str, kind: type, low: float, high: float):  # type: ignore[no-untyped-def]
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
            bounds = f"{low:,} to {high:,}" if kind is int else f"{low:g} to {high:g}"
            raise argparse.ArgumentTypeError(f"expected {bounds}, got {text}")
        return value
    parse.__name__ = flag
    return parse


def _url(*schemes: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> str:
        try:
            parts = urlsplit(text)
            parts.port  # raises ValueError when out of range
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a URL: {exc}") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise argparse.ArgumentTypeError(f"expected {schemes[0]}://HOST[:PORT]/..., got {text!r}")
        if parts.scheme == "redis" and not (parts.path.strip("/") or "0").isdigit():
            raise argparse.ArgumentTypeError(f"expected a database number after the port, got {parts.path!r}")
        return text
    return parse


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = _Parser(prog="python -m bench", description=__doc__.split("\n", 1)[0],
                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="run only what matches: a system (huey, actorq, limit) or system:variant, shell-style "
                        "wildcards (huey*, 'celery:acks*', 'actorq:tell-*'); repeatable")
    p.add_argument("--jobs", type=_ranged("--jobs", int, 10, MAX_JOBS), default=20_000, metavar="N",
                   help="jobs per phase (default 20000)")
    p.add_argument("--repeat", type=_ranged("--repeat", int, 1, 100), default=1, metavar="N",
                   help="rounds; the report takes medians, and every other round runs the systems in reverse "
                        "order (default 1)")
    p.add_argument("--timeout", type=_ranged("--timeout", float, 0.5, 86_400), default=300.0, metavar="S",
                   help="longest wait for a phase's jobs in seconds; a job not run by then counts as lost "
                        "(default 300)")
    p.add_argument("--cache", type=Path, default=Path("~/.cache/actorq-bench").expanduser(), metavar="DIR",
                   help="where the peers' virtualenvs live (default ~/.cache/actorq-bench)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "reports", metavar="DIR",
                   help="where the JSON and Markdown reports go (default bench/reports)")
    p.add_argument("--no-install", action="store_true",
                   help="use the virtualenvs already built; a peer without one is shown as not installed")
    p.add_argument("--redis-url", metavar="URL", type=_url("redis"),
                   help="use this Redis instead of starting two (its database is FLUSHDB'd before each phase; "
                        "its persistence mode is read from its config)")
    p.add_argument("--pg-url", metavar="URL", type=_url("postgresql", "postgres"),
                   help="use this PostgreSQL instead of starting one (the role needs CREATEDB: each phase gets a "
                        "database of its own, dropped after)")
    p.add_argument("--peers-dir", type=Path, default=runner.BENCH / "peers", metavar="DIR",
                   help="where the adapters are (default bench/peers; the limit row is DIR/../limit.py)")
    p.add_argument("--list", action="store_true",
                   help="run nothing: list the configurations (the names --only matches), what each needs and "
                        "why one cannot run; installs nothing")
    p.add_argument("--readme", type=Path, metavar="REPORT.json",
                   help="run nothing: rewrite README.md's speed section (between <!-- bench:begin --> and "
                        "<!-- bench:end -->) from this report")
    return p


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the bench (or rewrite the README); return the exit status."""
    args = parser().parse_args(argv)
    if args.readme is not None:
        try:
            data = report.load(args.readme)
            report.rewrite_readme(ROOT / "README.md", data, str(args.readme))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"python -m bench: --readme: {exc}", file=sys.stderr)
            return 2
        print(f"README.md: speed section rewritten from {args.readme}")
        return 0
    if not args.peers_dir.is_dir():
        print(f"python -m bench: --peers-dir: {args.peers_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"python -m bench: --out: cannot make {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    settings = runner.Settings(jobs=args.jobs, repeat=args.repeat, only=args.only, cache=args.cache.expanduser(),
                               out=args.out, install=not args.no_install, timeout=args.timeout,
                               redis_url=args.redis_url, pg_url=args.pg_url, peers_dir=args.peers_dir,
                               limit_script=args.peers_dir.parent / "limit.py")
    if args.list:
        settings.install = False
        configs = runner.peer_configs(settings, _progress) + runner.special_configs(settings)
        for config in configs:
            needs = f" (needs {', '.join(config.needs)})" if config.needs else ""
            if "redis" in config.needs:
                needs += ", a row per Redis mode"
            status = config.status
            if status.startswith("not installed: no virtualenv"):
                status = "not installed yet: a run builds its virtualenv"
            print(f"{config.system}:{config.variant}  [{config.cls}]{needs}" + (f"  {status}" if status else ""))
        return 0 if configs else 2
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop servers and workers on a plain kill too
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`&`)
    started = time.time()
    info = report.machine()
    if report.filesystem(tempfile.gettempdir()) == "tmpfs":
        _progress(f"warning: {tempfile.gettempdir()} is a tmpfs, where fsync costs nothing: the storage of every "
                  "SQLite row is memory (set TMPDIR to a folder on a disk)")
    stopped = "python -m bench: interrupted; every server and worker it started is stopped"
    try:
        configs, interrupted = runner.run_all(settings, _progress)
    except KeyboardInterrupt:
        print(stopped, file=sys.stderr)
        return 130
    if not configs:
        print("python -m bench: --only: nothing matches " + ", ".join(repr(p) for p in args.only), file=sys.stderr)
        return 2
    data = report.build(configs, {"jobs": args.jobs, "repeat": args.repeat, "timeout": args.timeout,
                                  "only": args.only, "batch": runner.BATCH, "cache": str(settings.cache),
                                  "redis_url": args.redis_url, "pg_url": args.pg_url,
                                  "argv": sys.argv[1:] if argv is None else argv,
                                  "interrupted": interrupted}, started, info)
    print(report.text(data))
    json_path, md_path = report.write(data, args.out)
    print(f"\nreports: {json_path} and {md_path}")
    if interrupted:
        print(f"{stopped}; the reports hold what ran before", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
