"""Every number in ``topology.toml`` has a range, and its extremes are refused by name (G12, G9).

Each numeric key is tried at 0, negative, huge (2**70), ``inf``, ``-inf`` and
``nan``: the reader accepts it only inside the key's range and otherwise raises
a `ConfigError` naming the file, the key and the range, which ``actorq check``
and ``actorq run`` print as one line with exit code 2. The cross-field bound
(a worker's credits, ``concurrency + prefetch``) is checked like the others.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Iterator

import pytest

from actorq.jobs.wire import MAX_CREDITS
from actorq.journal import SQLiteJournal
from actorq.journal.config import MAX_SECONDS
from actorq.node.cli import main
from actorq.node.config import Config, ConfigError, parse_config
from actorq.node.constants import EXIT_CONFIG

pytestmark = pytest.mark.timeout(120)

EXTREMES: list[Any] = [0, -1, 2**70, math.inf, -math.inf, math.nan]


def numeric_keys() -> Iterator[tuple[str, type, dict[str, Any]]]:
    """``(section.key, int or float, field metadata)`` for every number a topology holds."""
    for section in dataclasses.fields(Config):
        if not section.metadata.get("toml", True):
            continue
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                yield f"{section.name}.{f.name}", hints[f.name], dict(f.metadata)


KEYS = sorted(numeric_keys())


def in_range(value: Any, meta: dict[str, Any]) -> bool:
    return (math.isfinite(value) and meta["max"] >= value
            and ("min" not in meta or value >= meta["min"]) and ("gt" not in meta or value > meta["gt"]))


def document(key: str, value: Any) -> dict[str, Any]:
    section, name = key.split(".")
    return {section: {name: value}}


def range_text(tp: type, meta: dict[str, Any]) -> str:
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)
    kind = "an integer" if tp is int else "a number"
    if "min" in meta:
        return f"expected {kind} from {num(meta['min'])} to {num(meta['max'])}"
    return f"expected {kind} > {num(meta['gt'])} and <= {num(meta['max'])}"


def test_g12_every_number_in_the_topology_has_a_lower_and_an_upper_bound() -> None:
    assert len(KEYS) >= 20
    for key, _, meta in KEYS:
        assert "max" in meta and ("min" in meta or "gt" in meta), key


@pytest.mark.parametrize("value", EXTREMES, ids=repr)
@pytest.mark.parametrize(("key", "tp", "meta"), KEYS, ids=[k for k, _, _ in KEYS])
def test_g12_extremes_are_refused_naming_file_key_and_range(key: str, tp: type, meta: dict[str, Any],
                                                            value: Any) -> None:
    if tp is int and isinstance(value, float):
        expected = range_text(tp, meta)  # a float for an integer: refused as the wrong type
    elif in_range(value, meta):
        parse_config(document(key, value), source="topology.toml")  # 0 where 0 is allowed
        return
    else:
        expected = range_text(tp, meta)
    with pytest.raises(ConfigError) as info:
        parse_config(document(key, value), source="topology.toml")
    assert info.value.key == key
    assert str(info.value) == f"topology.toml: {key}: {expected}, got {value!r} ({type(value).__name__})"


@pytest.mark.parametrize(("key", "tp", "meta"), KEYS, ids=[k for k, _, _ in KEYS])
def test_g12_each_upper_bound_itself_is_accepted(key: str, tp: type, meta: dict[str, Any]) -> None:
    doc = document(key, tp(meta["max"]))
    if key == "workers.heartbeat_interval":  # the timeout must stay above it
        doc["workers"]["heartbeat_timeout"] = MAX_SECONDS
        doc["workers"]["heartbeat_interval"] = MAX_SECONDS / 2
    if key == "workers.prefetch":  # with the least concurrency, prefetch may take the rest
        doc["workers"].update(concurrency=1, prefetch=MAX_CREDITS - 1)
    parse_config(doc)


def test_g12_an_integer_past_any_float_is_refused_for_a_number() -> None:
    with pytest.raises(ConfigError, match=r"journal.busy_timeout: expected a number > 0 and <= 86400, got 1\d+ \(int\)"):
        parse_config({"journal": {"busy_timeout": 2**1100}}, source="topology.toml")


def test_g12_concurrency_of_two_million_is_refused_with_its_range() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"workers": {"concurrency": 2_000_000}}, source="topology.toml")
    assert str(info.value) == ("topology.toml: workers.concurrency: expected an integer from 1 to 100000, "
                               "got 2000000 (int)")


def test_g12_concurrency_plus_prefetch_is_bounded_by_the_credits_a_worker_may_ask() -> None:
    parse_config({"workers": {"concurrency": 100_000, "prefetch": MAX_CREDITS - 100_000}})  # exactly the limit
    with pytest.raises(ConfigError) as info:
        parse_config({"workers": {"concurrency": 16, "prefetch": MAX_CREDITS}}, source="topology.toml")
    assert info.value.key == "workers.prefetch"
    assert str(info.value) == (
        f"topology.toml: workers.prefetch: expected an integer from 0 to {MAX_CREDITS - 16} "
        f"(workers.concurrency + workers.prefetch may be at most {MAX_CREDITS}), got {MAX_CREDITS} (int)")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("workers.concurrency", "2000000", "expected an integer from 1 to 100000, got 2000000 (int)"),
    ("journal.busy_timeout", "inf", "expected a number > 0 and <= 86400, got inf (float)"),
    ("dispatcher.max_frame_bytes", str(2**70),
     f"expected an integer from 131072 to 1000000000, got {2**70} (int)"),
    ("workers.period", "nan", "expected a number > 0 and <= 86400, got nan (float)"),
    ("workers.shutdown_timeout", "-inf", "expected a number from 0 to 86400, got -inf (float)"),
])
def test_g12_check_prints_one_line_naming_file_key_and_range(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             key: str, value: str, expected: str) -> None:
    section, name = key.split(".")
    topology = tmp_path / "topology.toml"
    topology.write_text(f"[{section}]\n{name} = {value}\n")
    assert main(["check", "--config", str(topology)]) == EXIT_CONFIG
    assert capsys.readouterr().err == f"actorq: {topology}: {key}: {expected}\n"


@pytest.mark.parametrize("command", ["check", "run"])
def test_g12_check_and_run_refuse_an_infinite_busy_timeout_without_a_traceback(tmp_path: Path, command: str) -> None:
    # before: `check` said ok and `run` died with "OverflowError: cannot convert float infinity to integer"
    topology = tmp_path / "topology.toml"
    topology.write_text(f'[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\nbusy_timeout = inf\n')
    result = subprocess.run([sys.executable, "-m", "actorq.node.cli", command, "--config", str(topology)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_CONFIG
    assert result.stderr == f"actorq: {topology}: journal.busy_timeout: expected a number > 0 and <= 86400, got inf (float)\n"
    assert not (tmp_path / "j.db").exists()


def test_g12_sqlite_takes_the_longest_busy_timeout(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.db", busy_timeout=MAX_SECONDS)
    try:
        assert journal.pragma("busy_timeout") == int(MAX_SECONDS * 1000)
    finally:
        journal.close()
