"""The report of a run: its JSON, the table, the targets, the Markdown file and the README section.

Everything printed is rendered from the JSON report (``rows`` with every
phase result of every round), so ``python -m bench --readme REPORT.json``
prints the same table the run printed. Figures are medians over rounds. A
row that lost a job in any phase or round shows ``LOST n`` and no rate.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .peer import CLASSES
from . import servers as srv

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
CLASS_TEXT = {
    "fsync": "an accepted job is on disk (fsync'd) before the producer hears so",
    "process": "survives a crash of any process, not of the machine",
    "none": "in memory only, or acknowledged before it was stored",
}
COLUMNS = ["system", "variant", "storage", "enqueue/s", "batched enqueue/s", "drain/s", "e2e/s",
           "p50 / p99 ms at ½ peak", "lost / dup", "actorq best / this"]


# -- machine --------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    scratch = tempfile.gettempdir()
    return {"cpu": cpu, "cores": os.cpu_count(), "scratch": f"{scratch} ({filesystem(scratch)})",
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "postgresql": srv.pg_version(), "redis": srv.redis_version(),
            "os": f"{platform.system()} {platform.release()}", "load_average_at_start": load,
            "actorq": _actorq_version()}


def filesystem(path: str) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``tmpfs``...), from /proc/mounts."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and (path == fields[1] or path.startswith(fields[1].rstrip("/") + "/")) \
                    and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    except OSError:
        pass
    return kind


def _actorq_version() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return commit or "?"


# -- figures ------------------------------------------------------------------------------
def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def figures(row: dict[str, Any]) -> dict[str, Any]:
    """A row's medians over rounds, its losses and duplicates, and its errors."""
    phases: dict[str, list[dict[str, Any]]] = row.get("phases") or {}
    results = [r for rs in phases.values() for r in rs]

    def med(phase: str, key: str) -> float | None:
        return _median([r[key] for r in phases.get(phase, []) if r.get(key) is not None and r not in failed])

    # a phase in error that ran no job at all failed (a worker that did not start), it did not lose jobs
    failed = [r for r in results if r.get("error") and int(r.get("lost") or 0) >= int(r.get("jobs") or 1)]
    counted = [r for r in results if r not in failed]
    fig: dict[str, Any] = {  # the worst single run: a job lost in one phase is one job lost, not one per phase
        "failed": len(failed),
        "lost": max([int(r.get("lost") or 0) for r in counted] or [0]),
        "duplicated": max([int(r.get("duplicated") or 0) for r in results] or [0]),
        "errors": [f"{phase} (round {r.get('round', '?')}): {r['error']}"
                   for phase, rs in phases.items() for r in rs if r.get("error")],
        "remaining": max([int(r["remaining"]) for r in results if r.get("remaining")] or [0]),
        "strays": max([int(r.get("strays") or 0) for r in results] or [0]),
        "notes": sorted({str(note) for r in results for note in r.get("notes") or []}),
    }
    if row.get("kind") == "peer":
        fig.update(enqueue=med("drain", "enqueue_per_s"), batched=med("drain-batch", "enqueue_per_s"),
                   drain=med("drain", "drain_per_s"), e2e=med("e2e", "e2e_per_s"),
                   p50=med("e2e-paced", "p50_ms"), p99=med("e2e-paced", "p99_ms"))
    else:
        runs = phases.get("run", [])
        batched = any(int(r.get("batch") or 1) > 1 for r in runs)
        enqueue = med("run", "enqueue_per_s")
        fig.update(enqueue=None if batched else enqueue, batched=enqueue if batched else None,
                   drain=med("run", "drain_per_s"), e2e=med("run", "e2e_per_s"),
                   p50=med("run", "p50_ms"), p99=med("run", "p99_ms"))
        keys = sorted({k for r in runs for k in (r.get("extra") or {})})
        fig["extra"] = {k: _median([r["extra"][k] for r in runs if k in (r.get("extra") or {})]) for k in keys}
    fig["rate"] = next((fig[k] for k in ("e2e", "drain", "batched", "enqueue") if fig.get(k)), None)
    if fig["lost"]:
        for key in ("enqueue", "batched", "drain", "e2e", "p50", "p99", "rate"):
            fig[key] = None
    return fig


def best_actorq(rows: list[dict[str, Any]]) -> dict[str, float]:
    """actorq's best end-to-end rate per durability class, over its rows of that class or a stronger one.

    A row of a stronger class keeps every promise of a weaker one, so it may
    stand for actorq in a class where actorq has no row of its own (actorq has
    no ``none`` rows); rows that lost a job have no rate and do not count.
    """
    best: dict[str, float] = {}
    for row in rows:
        fig = row["figures"]
        if row["system"] == "actorq" and not row["status"] and fig.get("e2e") and row["class"] in CLASSES:
            for cls in CLASSES[CLASSES.index(row["class"]):]:
                best[cls] = max(best.get(cls, 0.0), fig["e2e"])
    return best


# -- the table ----------------------------------------------------------------------------
def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _cells(row: dict[str, Any], best: dict[str, float]) -> list[str]:
    fig = row["figures"]
    where = row.get("storage") or ""
    if row.get("redis_mode"):
        where = f"Redis, {row['redis_mode'].replace('-', ' ').replace('aof', 'AOF')}"
    head = [row["system"], row["variant"] + (f" @ {row['redis_mode']}" if row.get("redis_mode") else ""), where]
    status = row["status"] or ("" if row.get("phases") else "not run (the run was interrupted)")
    if status:
        head[2] = f"{where} — {status}" if where else status
        return head + [""] * (len(COLUMNS) - 3)
    if fig["lost"]:
        return head + ["", "", "", "", "", f"LOST {fig['lost']} / {fig['duplicated']}", ""]
    latency = "" if fig.get("p50") is None else f"{fig['p50']:.2f} / {fig['p99']:.2f}"
    lost_dup = f"0 / {fig['duplicated']}"
    if fig.get("failed"):
        lost_dup = f"{fig['failed']} phase(s) failed"
    ratio = ""
    if row["system"] not in ("actorq", "limit") and fig.get("e2e") and best.get(row["class"]):
        ratio = f"{best[row['class']] / fig['e2e']:.1f}×"
    e2e = _rate(fig.get("e2e"))
    if fig["errors"] and not e2e:
        e2e = "error (see notes)"
    return head + [_rate(fig.get("enqueue")), _rate(fig.get("batched")), _rate(fig.get("drain")), e2e, latency,
                   lost_dup, ratio]


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by class (strongest first), actorq and the limit first in each group."""
    rank = {"actorq": 0, "limit": 1}
    return sorted(rows, key=lambda r: (CLASSES.index(r["class"]) if r["class"] in CLASSES else len(CLASSES),
                                       rank.get(r["system"], 2), r["system"], r["variant"], r.get("redis_mode", "")))


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table, one group per durability class."""
    best = best_actorq(rows)
    lines = [COLUMNS]
    current = None
    for row in ordered(rows):
        if row["class"] != current:
            current = row["class"]
            lines.append([f"**{current}**"] + [""] * (len(COLUMNS) - 1))
        lines.append(_cells(row, best))
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    right = set(range(3, len(COLUMNS)))
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in right and n else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append("|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                                      for i, w in enumerate(widths)) + "|")
    classes = sorted({r["class"] for r in rows}, key=lambda c: CLASSES.index(c) if c in CLASSES else len(CLASSES))
    legend = "; ".join(f"**{c}**: {CLASS_TEXT.get(c, '?')}" for c in classes)
    return "\n".join(out) + (f"\n\nDurability classes: {legend}. lost / dup: the most jobs lost and run twice "
                             "in one phase; actorq best / this: actorq's best end-to-end rate in the row's class "
                             "(or a stronger one) over the row's." if rows else "")


def setups(rows: list[dict[str, Any]]) -> list[str]:
    """One line per system:variant: its durability as its adapter states it (and the Redis modes once)."""
    out, seen = [], set()
    for row in ordered(rows):
        label = f"{row['system']}:{row['variant']}"
        if row.get("durability") and label not in seen:
            seen.add(label)
            out.append(f"{label}: {row['durability']}")
    for mode, (_, _, what) in srv.REDIS_MODES.items():
        if any(r.get("redis_mode") == mode for r in rows):
            out.append(f"Redis {mode}: {what}")
    return out


def extras(rows: list[dict[str, Any]]) -> list[str]:
    """The special figures of actorq's rows (RSS, kill-to-rerun...), one line per row."""
    out = []
    for row in ordered(rows):
        figs = row["figures"].get("extra") or {}
        if figs and not row["status"]:
            out.append(f"{row['system']}:{row['variant']}: " + ", ".join(f"{k} {v:,.4g}" for k, v in figs.items()))
    return out


def one_line(error: str, width: int = 240) -> str:
    """An error as one line: its first line and, when it has more, its last (the JSON keeps it whole)."""
    lines = [" ".join(line.split()) for line in error.splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[0] if len(lines) == 1 else f"{lines[0][:width // 2]} … {lines[-1]}"
    return text if len(text) <= width else text[:width - 1] + "…"


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per phase error and per run that left jobs stored."""
    out = []
    for row in ordered(rows):
        label = f"{row['system']}:{row['variant']}" + (f"@{row['redis_mode']}" if row.get("redis_mode") else "")
        for error in row["figures"]["errors"]:
            out.append(f"{label}: {one_line(error)}")
        if row["figures"]["remaining"]:
            out.append(f"{label}: {row['figures']['remaining']} jobs still stored after a phase")
        if row["figures"].get("strays"):
            out.append(f"{label}: {row['figures']['strays']} runs of a job id outside the phase's jobs")
        for note in row["figures"].get("notes", []):
            out.append(f"{label}: {one_line(note)}")
    return out


# -- targets ------------------------------------------------------------------------------
def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The speed targets as measured in this run: met, not met, or not measured."""
    def row(system: str, variant: str) -> dict[str, Any] | None:
        found = [r for r in rows if r["system"] == system and r["variant"] == variant and not r["status"]]
        return found[0]["figures"] if found else None

    def value(system: str, variant: str, key: str = "rate") -> float | None:
        fig = row(system, variant)
        if fig is None:
            return None
        return fig.get("extra", {}).get(key) if key not in fig else fig.get(key)

    peers = [r for r in rows if r["system"] not in ("actorq", "limit") and not r["status"]]

    def best_peer(cls: str | None) -> float | None:
        rates = [r["figures"]["e2e"] for r in peers if r["figures"].get("e2e") and (cls is None or r["class"] == cls)]
        return max(rates) if rates else None

    tell = value("actorq", "tell-sqlite-full", "e2e")
    worst_margin = None
    for cls in CLASSES:
        ours = [r["figures"]["rate"] for r in rows
                if r["system"] == "actorq" and r["class"] == cls and not r["status"] and r["figures"].get("rate")]
        theirs = best_peer(cls)
        if ours and theirs:
            margin = min(ours) / theirs
            worst_margin = margin if worst_margin is None else min(worst_margin, margin)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    items = [
        ("embedded tell / per-job limit", ratio(tell, value("limit", "per-job")), ">=", 0.75),
        ("embedded tell / best fsync peer end to end", ratio(tell, best_peer("fsync")), ">=", 15.0),
        ("4 producers / embedded tell", ratio(value("actorq", "producers4-sqlite-full", "e2e"), tell), ">=", 0.40),
        ("4 producers / best peer end to end (any class)",
         ratio(value("actorq", "producers4-sqlite-full", "e2e"), best_peer(None)), ">", 1.0),
        ("batched enqueue / batched limit",
         ratio(value("actorq", "batched-sqlite-full", "batched"), value("limit", "batched")), ">=", 0.75),
        ("batched drain / batched limit",
         ratio(value("actorq", "batched-sqlite-full", "drain"), value("limit", "batched")), ">=", 0.75),
        ("tell p50 ms at half peak", value("actorq", "tell-sqlite-full", "p50"), "<=", 1.0),
        ("PostgreSQL / SQLite embedded", ratio(value("actorq", "tell-postgresql", "e2e"), tell), ">=", 0.75),
        ("idle RSS MB, node + 2 workers", value("actorq", "memory-sqlite-full", "idle_rss_mb"), "<=", 80.0),
        ("slowest actorq row / best peer of its class", worst_margin, ">", 1.0),
    ]
    out = []
    for name, measured, op, goal in items:
        met = None if measured is None else {">=": measured >= goal, ">": measured > goal,
                                             "<=": measured <= goal}[op]
        out.append({"target": name, "measured": measured, "op": op, "goal": goal, "met": met})
    return out


def targets_text(items: list[dict[str, Any]]) -> str:
    """The targets block: one line each."""
    width = max(len(t["target"]) for t in items)
    lines = []
    for t in items:
        measured = "—" if t["measured"] is None else f"{t['measured']:,.2f}"
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        lines.append(f"{t['target']:<{width}}  {measured:>9}  (target {t['op']} {t['goal']:g})  {verdict}")
    return "\n".join(lines)


# -- the report ----------------------------------------------------------------------------
def build(configs: list[Any], settings: dict[str, Any], started: float, info: dict[str, Any]) -> dict[str, Any]:
    """The JSON report of a run."""
    rows = [c.to_json() for c in configs]
    for row in rows:
        row["figures"] = figures(row)
    return {"format": 1, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "seconds": round(time.time() - started, 1), "machine": info, "settings": settings, "rows": rows,
            "targets": targets(rows)}


def load(path: Path) -> dict[str, Any]:
    """A JSON report, its figures recomputed from its phases."""
    report = json.loads(path.read_text())
    if not isinstance(report, dict) or report.get("format") != 1 or not isinstance(report.get("rows"), list):
        raise ValueError(f"{path}: not a report of python -m bench")
    for row in report["rows"]:
        row["figures"] = figures(row)
    report["targets"] = targets(report["rows"])
    return report


def machine_line(report: dict[str, Any]) -> str:
    """The machine and the date, one line."""
    m = report["machine"]
    return (f"{report['date']}, {m.get('cpu')} ({m.get('cores')} cores), {m.get('os')}, load average at start "
            f"{m.get('load_average_at_start')}; Python {m.get('python')}, SQLite {m.get('sqlite')}, "
            f"PostgreSQL {m.get('postgresql') or 'not installed'}, Redis {m.get('redis') or 'not installed'}; "
            f"work files in {m.get('scratch', '?')}; actorq {m.get('actorq')}")


def settings_line(report: dict[str, Any]) -> str:
    """The run's settings, one line."""
    s = report["settings"]
    only = " ".join(f"--only '{p}'" for p in s.get("only") or [])
    return (f"{s.get('jobs'):,} jobs per phase, {s.get('repeat')} round(s) (medians), 2 worker processes per "
            f"system, phase timeout {s.get('timeout'):g} s, batches of 100" + (f", {only}" if only else "")
            + (" (INTERRUPTED: a partial run)" if s.get("interrupted") else ""))


def text(report: dict[str, Any]) -> str:
    """What the run prints at the end: the table, notes, targets."""
    parts = [table(report["rows"])]
    lines = setups(report["rows"])
    if lines:
        parts.append("Set-ups and durability:\n" + "\n".join(f"- {line}" for line in lines))
    lines = extras(report["rows"])
    if lines:
        parts.append("Special figures:\n" + "\n".join(f"- {line}" for line in lines))
    extra = notes(report["rows"])
    if extra:
        parts.append("Notes:\n" + "\n".join(f"- {line}" for line in extra))
    parts.append("Targets (ratios within this run; printed, not enforced):\n```\n"
                 + targets_text(report["targets"]) + "\n```")
    return "\n\n".join(parts)


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report."""
    return (f"# python -m bench\n\n{machine_line(report)}\n\n{settings_line(report)}; "
            f"the run took {report.get('seconds', 0):,.0f} s.\n\n{text(report)}\n")


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``bench-YYYYmmdd-HHMMSS.json`` and ``.md`` into ``out``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def readme_section(report: dict[str, Any], source: str) -> str:
    """The README's generated speed section."""
    return (f"{BEGIN}\n<!-- generated by `python -m bench --readme {source}`; edit the report, not this -->\n\n"
            f"{machine_line(report)}.\n\n{settings_line(report)}.\n\n{text(report)}\n{END}")


def rewrite_readme(readme: Path, report: dict[str, Any], source: str) -> None:
    """Replace the README's text between the bench markers with the report's section.

    Raises:
        ValueError: the README has not exactly one pair of markers.
    """
    content = readme.read_text()
    if content.count(BEGIN) != 1 or content.count(END) != 1 or content.index(BEGIN) > content.index(END):
        raise ValueError(f"{readme}: expected one {BEGIN} ... {END} pair")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    readme.write_text(pattern.sub(lambda _: readme_section(report, source), content))


__all__ = ["BEGIN", "END", "build", "figures", "load", "machine", "markdown", "rewrite_readme", "table",
           "targets", "text", "write"]
