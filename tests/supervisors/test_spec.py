"""Specs, flags and exits (ACCEPTANCE A6, A7): validation with named errors, OTP defaults,
and the mapping of actor and process exits onto `Exit`.

A6's ``topology.toml`` part (file, key path, "did you mean") belongs to the node's
config loader, not to this package, and is not tested here.
"""

from __future__ import annotations

import math
import signal
from typing import Any

import pytest

from actorq import ActorQError, ActorSystem
from actorq.supervisors import (
    IGNORE,
    KILLED,
    NORMAL,
    SHUTDOWN,
    Backoff,
    ChildSpec,
    Exit,
    InvalidChildSpec,
    InvalidSupFlags,
    StartFailed,
    SupFlags,
    SupervisorError,
    start_supervisor,
    supervisor_spec,
)

pytestmark = pytest.mark.timeout(30)


async def noop_start(*args: Any) -> Any:
    return IGNORE


def spec(**fields: Any) -> ChildSpec:
    values: dict[str, Any] = {"id": "db", "start": noop_start}
    values.update(fields)
    return ChildSpec(**values)


# -- A7: defaults -----------------------------------------------------------------------------


def test_a7_child_spec_defaults() -> None:
    worker = ChildSpec("w", noop_start)
    assert (worker.args, worker.restart, worker.type, worker.shutdown, worker.significant) == \
        ((), "permanent", "worker", 5.0, False)
    sup = ChildSpec("s", noop_start, type="supervisor")
    assert sup.shutdown == "infinity"
    nested = supervisor_spec("n", SupFlags(), [])
    assert (nested.type, nested.shutdown, nested.restart) == ("supervisor", "infinity", "permanent")


def test_a7_sup_flags_defaults() -> None:
    flags = SupFlags()
    assert (flags.strategy, flags.intensity, flags.period, flags.auto_shutdown, flags.backoff) == \
        ("one_for_one", 1, 5, "never", None)


# -- A6: invalid values, each with a named error --------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"restart": "sometimes"},
     "child 'db': restart: expected one of permanent, transient, temporary, got 'sometimes'"),
    ({"shutdown": -1}, "child 'db': shutdown: expected seconds > 0"),
    ({"shutdown": 0}, "child 'db': shutdown: expected seconds > 0"),
    ({"shutdown": math.inf}, "child 'db': shutdown: expected seconds > 0"),
    ({"shutdown": True}, "child 'db': shutdown: expected seconds > 0"),
    ({"shutdown": "later"}, "got 'later'"),
    ({"type": "daemon"}, "child 'db': type: expected one of worker, supervisor, got 'daemon'"),
    ({"id": None}, "child spec: id: expected a non-empty string, got None"),
    ({"id": ""}, "child spec: id: expected a non-empty string, got ''"),
    ({"start": None}, "child 'db': start: expected a start function"),
    ({"args": [1, 2]}, "child 'db': args: expected a tuple, got [1, 2]"),
    ({"significant": 1}, "child 'db': significant: expected True or False, got 1"),
    ({"significant": True}, "child 'db': significant: a permanent child cannot be significant"),
])
def test_a6_invalid_child_spec_fields_are_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidChildSpec) as info:
        spec(**fields)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ActorQError)


def test_a6_missing_id_or_start() -> None:
    with pytest.raises(TypeError):
        ChildSpec(start=noop_start)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ChildSpec("x")  # type: ignore[call-arg]


@pytest.mark.parametrize(("fields", "message"), [
    ({"strategy": "one_for_some"}, "supervisor flags: strategy: expected one of one_for_one, one_for_all, "
                                   "rest_for_one, simple_one_for_one, got 'one_for_some'"),
    ({"intensity": 1.5}, "supervisor flags: intensity: expected an integer >= 0, got 1.5"),
    ({"intensity": True}, "supervisor flags: intensity: expected an integer >= 0, got True"),
    ({"intensity": -1}, "supervisor flags: intensity: expected an integer >= 0, got -1"),
    ({"period": 0}, "supervisor flags: period: expected seconds > 0 (finite), got 0"),
    ({"period": math.inf}, "supervisor flags: period: expected seconds > 0 (finite), got inf"),
    ({"period": "5"}, "supervisor flags: period: expected seconds > 0 (finite), got '5'"),
    ({"auto_shutdown": "sometimes"}, "supervisor flags: auto_shutdown: expected one of never, any_significant, "
                                     "all_significant, got 'sometimes'"),
    ({"backoff": 2.0}, "supervisor flags: backoff: expected a Backoff or None, got 2.0"),
])
def test_a6_invalid_sup_flags_are_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSupFlags) as info:
        SupFlags(**fields)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, ActorQError)


@pytest.mark.parametrize(("fields", "message"), [
    ({"base": 0}, "backoff: base: expected seconds > 0"),
    ({"base": 1, "factor": 0.5}, "backoff: factor: expected a finite number >= 1, got 0.5"),
    ({"base": 2, "cap": 1}, "backoff: cap: expected finite seconds >= base (2), got 1"),
])
def test_a6_invalid_backoff(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSupFlags, match=message.replace("(", r"\(").replace(")", r"\)")):
        Backoff(**fields)


async def test_a6_spec_lists_duplicate_ids_and_pool_templates_rejected_before_anything_starts() -> None:
    async with ActorSystem() as system:
        with pytest.raises(InvalidChildSpec, match="child 'db': id: duplicate id"):
            await start_supervisor(system, SupFlags(), [spec(), spec()])
        with pytest.raises(InvalidChildSpec, match="exactly one child spec"):
            await start_supervisor(system, SupFlags("simple_one_for_one"), [spec(id="a"), spec(id="b")])
        with pytest.raises(InvalidChildSpec, match="exactly one child spec"):
            await start_supervisor(system, SupFlags("simple_one_for_one"), [])
        with pytest.raises(InvalidChildSpec, match="expected a ChildSpec"):
            await start_supervisor(system, SupFlags(), [{"id": "db"}])  # type: ignore[list-item]
        with pytest.raises(InvalidSupFlags, match="expected a SupFlags"):
            await start_supervisor(system, {"strategy": "one_for_one"}, [])  # type: ignore[arg-type]
        with pytest.raises(InvalidChildSpec, match="significant: needs auto_shutdown"):
            await start_supervisor(system, SupFlags(), [spec(restart="transient", significant=True)])
        with pytest.raises(InvalidChildSpec, match="duplicate"):
            supervisor_spec("nested", SupFlags(), [spec(), spec()])
        assert system.actors() == []


def test_supervisor_errors_are_actorq_errors() -> None:
    failed = StartFailed("db", RuntimeError("no"))
    assert isinstance(failed, SupervisorError) and isinstance(failed, ActorQError)
    assert failed.child_id == "db" and isinstance(failed.__cause__, RuntimeError)
    assert "child 'db' failed to start" in str(failed)


# -- exits -------------------------------------------------------------------------------------------


def test_exit_kinds_strings_and_abnormality() -> None:
    assert (str(NORMAL), str(SHUTDOWN), str(KILLED)) == ("normal", "shutdown", "killed")
    assert str(Exit("error", "exit code 3")) == "exit code 3"
    assert str(Exit("error", RuntimeError("boom"))) == "RuntimeError('boom')"
    assert str(Exit("shutdown", "maintenance")) == "shutdown: maintenance"
    assert [e.abnormal for e in (NORMAL, SHUTDOWN, KILLED, Exit("error"))] == [False, False, True, True]
    with pytest.raises(ValueError, match="exit kind"):
        Exit("crashed")


def test_exit_mapping_for_actor_reasons() -> None:
    boom = RuntimeError("boom")
    assert Exit.from_actor("normal") == NORMAL
    assert Exit.from_actor("shutdown") == SHUTDOWN
    assert Exit.from_actor(("shutdown", "moving")) == Exit("shutdown", "moving")
    assert Exit.from_actor("killed") == KILLED
    assert Exit.from_actor(boom) == Exit("error", boom)
    assert Exit.from_actor("die") == Exit("error", "die")
    assert Exit.from_actor(SHUTDOWN) is SHUTDOWN


def test_exit_mapping_for_process_return_codes() -> None:
    assert Exit.from_returncode(0) == NORMAL
    assert Exit.from_returncode(0, stop_requested=True) == SHUTDOWN
    assert Exit.from_returncode(-signal.SIGTERM, stop_requested=True) == SHUTDOWN
    assert Exit.from_returncode(-signal.SIGTERM) == Exit("error", "signal SIGTERM")
    assert Exit.from_returncode(-signal.SIGKILL) == KILLED
    assert Exit.from_returncode(-signal.SIGKILL, stop_requested=True) == KILLED
    assert Exit.from_returncode(3) == Exit("error", "exit code 3")
    assert Exit.from_returncode(3, stop_requested=True) == Exit("error", "exit code 3")
    assert Exit.from_returncode(-signal.SIGSEGV) == Exit("error", "signal SIGSEGV")


def test_backoff_delays_grow_to_the_cap() -> None:
    backoff = Backoff(0.5, factor=2, cap=3)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3, 3]
    assert Backoff(1.0).delay(10_000) == 30.0
