"""Tests for actorq.node.config (topology.toml loading and validation).

ACCEPTANCE: G9 (config errors) and A6 (config errors name file/key/expected
+ "did you mean") are covered by the error tests below.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import textwrap
from pathlib import Path

import pytest

import actorq
from actorq.journal.backends import journal_class
from actorq.node.config import (
    Config,
    ConfigError,
    DispatcherConfig,
    JournalConfig,
    NodeConfig,
    WorkersConfig,
    default_config,
    load_config,
    parse_config,
)

FULL = """
[node]
name = "node-a"
tasks = ["myapp.tasks", "other_app.jobs:registry"]
endpoint = "tcp://127.0.0.1:5555"
log_level = "debug"

[journal]
url = "sqlite:////var/lib/actorq/journal.db"
synchronous = "normal"
busy_timeout = 2.5
batch_max = 100

[dispatcher]
poll_interval = 0.05
lease_timeout = 60
max_frame_bytes = 262144

[workers]
processes = 4
concurrency = 8
prefetch = 0
queues = ["default", "emails"]
shutdown_timeout = 0
intensity = 3
period = 5.5
"""


def write(tmp_path: Path, text: str, name: str = "topology.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    """Load ``text`` as topology.toml from inside tmp_path; return the ConfigError."""
    write(tmp_path, text)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # so the file name in the message is exactly "topology.toml"
    try:
        with pytest.raises(ConfigError) as info:
            load_config("topology.toml")
    finally:
        os.chdir(cwd)
    return info.value


# --- valid files ---------------------------------------------------------------


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    cfg = load_config(path)
    assert cfg.node == NodeConfig(name=socket.gethostname())
    assert cfg.journal == JournalConfig()
    assert cfg.dispatcher == DispatcherConfig()
    assert cfg.workers == WorkersConfig()
    assert cfg.journal.url == "sqlite:///actorq.db"
    assert cfg.journal.synchronous == "full"
    assert cfg.workers.queues == ("default",)
    assert cfg.workers.processes == 2
    assert cfg.path == path.absolute()
    assert cfg.base_dir == tmp_path.absolute()


def test_default_config_matches_empty_file(tmp_path: Path) -> None:
    assert default_config() == dataclasses.replace(load_config(write(tmp_path, "")), path=None)
    assert default_config().base_dir == Path.cwd()


def test_full_file_round_trips_every_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.node == NodeConfig(
        name="node-a",
        tasks=("myapp.tasks", "other_app.jobs:registry"),
        endpoint="tcp://127.0.0.1:5555",
        log_level="debug",
    )
    assert cfg.journal == JournalConfig(
        url="sqlite:////var/lib/actorq/journal.db",
        synchronous="normal",
        busy_timeout=2.5,
        batch_max=100,
    )
    assert cfg.dispatcher == DispatcherConfig(
        poll_interval=0.05, lease_timeout=60.0, max_frame_bytes=262144
    )
    assert cfg.workers == WorkersConfig(
        processes=4,
        concurrency=8,
        prefetch=0,
        queues=("default", "emails"),
        shutdown_timeout=0.0,
        intensity=3,
        period=5.5,
    )
    # An int is accepted for a float field and stored as a float.
    assert isinstance(cfg.dispatcher.lease_timeout, float)
    # Lists become tuples.
    assert isinstance(cfg.node.tasks, tuple)


def test_partial_section_keeps_other_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[workers]\nprocesses = 3\n"))
    assert cfg.workers == WorkersConfig(processes=3)
    assert cfg.journal == JournalConfig()


@pytest.mark.parametrize(
    "endpoint", ["", "ipc:///tmp/actorq.sock", "tcp://127.0.0.1:7000", "tcp://localhost:7000"]
)
def test_allowed_endpoints(endpoint: str) -> None:
    assert parse_config({"node": {"endpoint": endpoint}}).node.endpoint == endpoint


def test_parse_config_for_embedders() -> None:
    cfg = parse_config({"workers": {"queues": ["a"]}, "node": {"name": "x"}})
    assert cfg.workers.queues == ("a",)
    assert cfg.node.name == "x"
    assert cfg.path is None


def test_config_is_frozen() -> None:
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers = WorkersConfig()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers.processes = 9  # type: ignore[misc]


def test_sqlite_path_relative_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"journal": {"url": "sqlite:///a.db"}})
    assert cfg.journal.sqlite_path == Path.cwd() / "a.db"
    cfg = parse_config({"journal": {"url": "sqlite:///data/b.db"}})
    assert cfg.journal.sqlite_path == Path.cwd() / "data" / "b.db"


def test_e11_node_file_sits_beside_the_real_journal_file(tmp_path: Path) -> None:
    real = tmp_path / "data" / "journal.db"
    real.parent.mkdir()
    (tmp_path / "link.db").symlink_to(real)
    expected = real.with_name("journal.db.node")
    for spelling in (real, tmp_path / "link.db", tmp_path / "data" / ".." / "data" / "journal.db"):
        cfg = parse_config({"journal": {"url": f"sqlite:///{spelling}"}})
        assert cfg.node_file == expected, spelling


def test_sqlite_path_absolute() -> None:
    cfg = parse_config({"journal": {"url": "sqlite:////tmp/a.db"}})
    assert cfg.journal.sqlite_path == Path("/tmp/a.db")


# --- errors: G9 (config errors), A6 (file/key/expected + did you mean) ----------------


def test_wrong_type_names_file_key_expectation_and_value(tmp_path: Path) -> None:
    # G9, A6
    err = load_error(tmp_path, '[workers]\nprocesses = "two"\n')
    assert str(err) == "topology.toml: workers.processes: expected an integer from 1 to 1024, got 'two' (str)"
    assert err.file == "topology.toml"
    assert err.key == "workers.processes"
    assert err.message == "expected an integer from 1 to 1024, got 'two' (str)"
    assert isinstance(err, actorq.ActorQError), "one base class for every error actorq raises on purpose"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        # G9: every supported field type names what it expected
        (
            "[workers]\nprocesses = true",
            "workers.processes: expected an integer from 1 to 1024, got True (bool)",
        ),
        (
            "[workers]\nprocesses = 1.5",
            "workers.processes: expected an integer from 1 to 1024, got 1.5 (float)",
        ),
        ("[workers]\nprocesses = 0", "workers.processes: expected an integer from 1 to 1024, got 0 (int)"),
        ("[workers]\nprefetch = -1", "workers.prefetch: expected an integer from 0 to 1000000, got -1 (int)"),
        ("[workers]\nperiod = false", "workers.period: expected a number > 0 and <= 86400, got False (bool)"),
        (
            "[dispatcher]\npoll_interval = 0",
            "dispatcher.poll_interval: expected a number > 0 and <= 86400, got 0 (int)",
        ),
        (
            "[journal]\nbusy_timeout = \"5\"",
            "journal.busy_timeout: expected a number > 0 and <= 86400, got '5' (str)",
        ),
        (
            "[dispatcher]\nmax_frame_bytes = 10",
            "dispatcher.max_frame_bytes: expected an integer from 131072 to 1000000000, got 10 (int)",
        ),
        ("[node]\nname = 5", "node.name: expected a string, got 5 (int)"),
        ("[node]\ntasks = \"myapp\"", "node.tasks: expected a list of strings, got 'myapp' (str)"),
        (
            "[node]\ntasks = [\"a\", 1]",
            "node.tasks: expected a list of strings, got ['a', 1] (list)",
        ),
        (
            "[node]\nlog_level = \"trace\"",
            "node.log_level: expected one of 'debug', 'info', 'warning', 'error', got 'trace' (str)",
        ),
        (
            "[journal]\nsynchronous = \"off\"",
            "journal.synchronous: expected one of 'full', 'normal', 'extra', got 'off' (str)",
        ),
        (
            "[workers]\nqueues = []",
            "workers.queues: expected a non-empty list of at most 256 queue names, each 1 to 255 characters, got 0 names",
        ),
        (
            "[workers]\nqueues = [\"a\", \"\"]",
            "workers.queues: expected a non-empty list of at most 256 queue names, each 1 to 255 characters, got one of 0 characters",
        ),
        # A6 in topology.toml: the node's own supervisors
        (
            "[supervision]\nstrategy = \"one_for_none\"",
            "supervision.strategy: expected one of 'one_for_one', 'one_for_all', 'rest_for_one', "
            "got 'one_for_none' (str)",
        ),
        (
            "[supervision]\ncore_strategy = \"simple_one_for_one\"",
            "supervision.core_strategy: expected one of 'one_for_one', 'one_for_all', 'rest_for_one', "
            "got 'simple_one_for_one' (str)",
        ),
        ("[supervision]\nintensity = 1.5", "supervision.intensity: expected an integer from 0 to 1000000, got 1.5 (float)"),
        ("[supervision]\nperiod = 0", "supervision.period: expected a number > 0 and <= 86400, got 0 (int)"),
        ("[supervision]\ncore_intensity = -1", "supervision.core_intensity: expected an integer from 0 to 1000000, got -1 (int)"),
        ("[workers]\nrestart_backoff = -1", "workers.restart_backoff: expected a number from 0 to 86400, got -1 (int)"),
        (
            "[workers]\nheartbeat_interval = 2\nheartbeat_timeout = 1",
            "workers.heartbeat_timeout: expected a number > workers.heartbeat_interval (2), got 1.0",
        ),
        ("[journal]\nlock_timeout = 0", "journal.lock_timeout: expected a number > 0 and <= 86400, got 0 (int)"),
        (
            "[journal]\nidle_in_transaction_timeout = 5\n[dispatcher]\nlease_timeout = 4",
            "journal.idle_in_transaction_timeout: expected a number > 0 and < dispatcher.lease_timeout (4), got 5.0",
        ),
        (
            "[journal]\nlock_timeout = 4\n[dispatcher]\nlease_timeout = 4",
            "journal.lock_timeout: expected a number > 0 and < dispatcher.lease_timeout (4), got 4.0",
        ),
    ],
)
def test_field_errors(tmp_path: Path, toml: str, message: str) -> None:
    assert str(load_error(tmp_path, toml)) == f"topology.toml: {message}"


def test_bool_rejected_for_int() -> None:
    # G9
    with pytest.raises(ConfigError) as info:
        parse_config({"workers": {"concurrency": True}}, source="topology.toml")
    assert str(info.value) == (
        "topology.toml: workers.concurrency: expected an integer from 1 to 100000, got True (bool)"
    )


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    # A6
    err = load_error(tmp_path, "[workers]\nprocesess = 2\n")
    assert str(err) == "topology.toml: workers.procesess: unknown key; did you mean 'processes'?"
    assert err.key == "workers.procesess"


def test_unknown_key_without_close_match_lists_keys(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[dispatcher]\nzzz = 1\n")
    assert str(err) == (
        "topology.toml: dispatcher.zzz: unknown key; expected one of "
        "'poll_interval', 'lease_timeout', 'max_frame_bytes'"
    )


def test_unknown_section_did_you_mean(tmp_path: Path) -> None:
    # A6
    err = load_error(tmp_path, "[worker]\nprocesses = 2\n")
    assert str(err) == "topology.toml: worker: unknown section; did you mean 'workers'?"


def test_path_is_not_a_toml_key(tmp_path: Path) -> None:
    err = load_error(tmp_path, 'path = "/etc"\n')
    assert err.key == "path"
    assert err.message.startswith("unknown section")


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # G9
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("missing.toml")
    assert str(info.value) == "missing.toml: cannot read the file: No such file or directory"
    assert info.value.file == "missing.toml"
    assert info.value.key is None


def test_invalid_toml_reports_line(tmp_path: Path) -> None:
    # G9
    err = load_error(tmp_path, "[workers]\nprocesses = 2\nqueues = [\"a\" \"b\"]\n")
    assert str(err).startswith("topology.toml: invalid TOML: ")
    assert "line 3" in str(err)
    assert err.key is None


def test_bad_url_scheme(tmp_path: Path) -> None:
    # G9, A6
    err = load_error(tmp_path, '[journal]\nurl = "mysql://x"\n')
    assert str(err) == (
        "topology.toml: journal.url: expected a URL starting with sqlite:/// or postgresql://, got 'mysql://x'"
    )


@pytest.mark.parametrize("url", ["postgresql://db/actorq", "postgres://u@db:5433/actorq"])
def test_postgresql_url_selects_the_shared_journal(tmp_path: Path, url: str) -> None:
    cfg = load_config(write(tmp_path, f'[node]\nname = "n1"\n[journal]\nurl = "{url}"\nschema = "jobs_2"\n'))
    assert journal_class(cfg.journal.url).shared and cfg.journal.resolved_url == url and cfg.journal.schema == "jobs_2"
    assert cfg.node_file == tmp_path / ".actorq-n1.node"  # several nodes: one file each
    with pytest.raises(ValueError, match="not an SQLite URL"):
        _ = cfg.journal.sqlite_path


@pytest.mark.parametrize("schema", ["Jobs", "1jobs", "jobs;drop", "", "a" * 64])
def test_bad_schema_name(tmp_path: Path, schema: str) -> None:
    err = load_error(tmp_path, f'[journal]\nurl = "postgresql://db/x"\nschema = "{schema}"\n')
    assert str(err).startswith("topology.toml: journal.schema: expected a lower-case SQL identifier")


def test_bad_url_never_shows_a_password(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[journal]\nurl = "mysql://bob:hunter2@db/x"\n')
    assert "hunter2" not in str(err) and "bob:***@db/x" in str(err)


def test_sqlite_url_needs_a_path(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[journal]\nurl = "sqlite:///"\n')
    assert str(err) == (
        "topology.toml: journal.url: expected a file path after sqlite:///, got 'sqlite:///'"
    )


@pytest.mark.parametrize("entry", ["my app", "1mod", "mod:", "mod:attr.sub", ":attr", ""])
def test_bad_tasks_entry(tmp_path: Path, entry: str) -> None:
    err = load_error(tmp_path, f'[node]\ntasks = ["ok.module", "{entry}"]\n')
    assert str(err) == (
        "topology.toml: node.tasks: expected entries like 'module' or 'module:attribute', "
        f"got {entry!r}"
    )


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [("tcp://0.0.0.0:5555", ": the dispatcher's endpoint has no authentication, so it listens on 127.0.0.1 only"),
     ("tcp://10.0.0.1:5555", ": the dispatcher's endpoint has no authentication, so it listens on 127.0.0.1 only"),
     ("tcp://*:5555", ": the dispatcher's endpoint has no authentication, so it listens on 127.0.0.1 only"),
     ("tcp://127.0.0.1:abc", ""), ("tcp://127.0.0.1:70000", ""), ("inproc://x", "")],
)
def test_non_loopback_or_malformed_endpoint_rejected(tmp_path: Path, endpoint: str, why: str) -> None:
    err = load_error(tmp_path, f'[node]\nendpoint = "{endpoint}"\n')
    assert str(err) == (
        "topology.toml: node.endpoint: expected ipc:///absolute/path or tcp://127.0.0.1:PORT (PORT 1 to 65535), "
        f"got {endpoint!r}{why}"
    )


def test_section_not_a_table(tmp_path: Path) -> None:
    # G9
    err = load_error(tmp_path, "workers = 5\n")
    assert str(err) == "topology.toml: workers: expected a table, got 5 (int)"


def test_parse_config_source_default() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"journal": []})
    assert str(info.value) == "<config>: journal: expected a table, got [] (list)"


def test_config_error_is_an_exception() -> None:
    err = ConfigError("f.toml", None, "boom")
    assert isinstance(err, Exception)
    assert str(err) == "f.toml: boom"
    assert str(ConfigError("f.toml", "a.b", "boom")) == "f.toml: a.b: boom"
    assert isinstance(Config(), Config)


@dataclasses.dataclass(frozen=True, slots=True)
class Inner:
    flag: bool = False
    label: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_generic_walker_supports_optional_bool_and_nested_tables() -> None:
    # Field types not used by the topology dataclasses yet, exercised through the walker.
    from actorq.node.config import _build

    assert _build(Outer, {"inner": {"flag": True, "label": "x"}}, "", "t.toml") == Outer(
        Inner(flag=True, label="x")
    )
    assert _build(Outer, {}, "", "t.toml") == Outer()
    with pytest.raises(ConfigError) as info:
        _build(Outer, {"inner": {"flag": 1}}, "", "t.toml")
    assert str(info.value) == "t.toml: inner.flag: expected true or false, got 1 (int)"
    with pytest.raises(ConfigError) as info:
        _build(Outer, {"inner": {"label": 2}}, "", "t.toml")
    assert str(info.value) == "t.toml: inner.label: expected a string, got 2 (int)"


def test_supervision_unknown_key_did_you_mean(tmp_path: Path) -> None:
    message = str(load_error(tmp_path, "[supervision]\nintensty = 3"))
    assert message == "topology.toml: supervision.intensty: unknown key; did you mean 'intensity'?"


def test_session_limits_default_to_a_share_of_the_lease_timeout() -> None:
    """PostgreSQL's bounded waits: the defaults, scaled down for short leases; set values as given."""
    assert default_config().journal.session_limits(300.0) == (0.5, 2.0)
    assert default_config().journal.session_limits(1.0) == (0.25, 0.5)
    config = parse_config({"journal": {"lock_timeout": 0.1, "idle_in_transaction_timeout": 3},
                           "dispatcher": {"lease_timeout": 4}})
    assert config.journal.session_limits(4.0) == (0.1, 3.0)


# -- retention of finished jobs: durations by state, or "forever" ----------------------------------
def test_retention_defaults_keep_dead_jobs_longest() -> None:
    from actorq.journal import JobState

    assert JournalConfig().retention == {JobState.SUCCEEDED: 86400.0, JobState.CANCELLED: 86400.0,
                                         JobState.FAILED: 7 * 86400.0, JobState.DEAD: 30 * 86400.0}


@pytest.mark.parametrize(("value", "seconds"), [
    ('"30s"', 30.0), ('"10m"', 600.0), ('"12h"', 43200.0), ('"7d"', 604800.0), ('"1.5h"', 5400.0),
    ("90", 90.0), ("2.5", 2.5), ("0", 0.0), ('"0s"', 0.0), ('"3650d"', 3650 * 86400.0), ('"forever"', None),
])
def test_retention_reads_durations_seconds_and_forever(tmp_path: Path, value: str, seconds: float | None) -> None:
    from actorq.journal import JobState

    cfg = load_config(write(tmp_path, f"[journal]\nretain_dead = {value}\n"))
    assert cfg.journal.retain_dead == seconds
    assert (JobState.DEAD in cfg.journal.retention) is (seconds is not None)


@pytest.mark.parametrize("value", ['"-1s"', "-1", '"7w"', '"d"', '""', '"3651d"', "1e300", "inf", "nan", "true",
                                   '"forever!"', "[1]", "99999999999999999999999"])
def test_retention_refuses_anything_else_naming_file_and_key(tmp_path: Path, value: str) -> None:
    message = str(load_error(tmp_path, f"[journal]\nretain_succeeded = {value}\n"))
    assert message.startswith('topology.toml: journal.retain_succeeded: expected a duration such as "30s", "10m", '
                              '"12h", "7d" or seconds (a number), or "forever", from 0 to 3650d (ten years); got ')
    assert "\n" not in message
