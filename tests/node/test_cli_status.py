"""``actorq status`` against a real node: its line, a journal write held up by SQLite's lock, no answer.

A real ``actorq run`` (`NodeProcess`) serves a real SQLite file; ``actorq enqueue``
runs as a user runs it, in a subprocess, and ``actorq status`` through its ``main(argv)``
in the test's process (`cli_support`), polled. The lock
is taken by the test itself, with a plain ``sqlite3`` connection in ``BEGIN
IMMEDIATE``, as another process writing to the file would hold it. Every wait
is a bounded poll on what ``status`` prints; nothing asserts a duration.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from actorq import Client, Job
from actorq.node.constants import EXIT_OK

from cli_support import actorq_main
from node_process import NodeProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))
from socket_support import wait_for_node  # noqa: E402

TASKS = """
@registry.task("st.echo")
def echo(x):
    record()
    return x


@registry.task("st.gate")
def gate(path):
    # runs until the test creates `path` (bounded): a job the test knows is in flight
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    record()
"""


def _actorq(topo: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actorq.node.cli", *args, "--config", str(topo.toml_path)],
                          cwd=topo.dir, capture_output=True, text=True, timeout=120)


def _status(topo: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``actorq status`` through its ``main(argv)`` in this process (a poll each time: a process
    started for each would cost more than the wait); the node it asks is a process."""
    result = actorq_main("status", *args, "--config", str(topo.toml_path))
    assert result.returncode == EXIT_OK and not result.stderr, result.stderr
    return result


def _until(topo: Any, predicate: Callable[[dict[str, Any]], bool], what: str,
           timeout: float = 60.0) -> dict[str, Any]:
    """Run ``actorq status --json`` until `predicate` holds for its report (bounded); return the report."""
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        report = json.loads(_status(topo, "--json").stdout)
        if predicate(report):
            return report
        time.sleep(0.1)
    raise AssertionError(f"status never showed {what}; last: {report}")


def _node_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith(("node ", "no node "))):]


def test_status_prints_the_node_line_of_a_running_node_and_says_when_none_runs(topology) -> None:
    topo = topology(TASKS, processes=1, name="prof")
    node = NodeProcess(topo, 1, "--quiet")
    try:
        wait_for_node(Path(topo.config.node_file), 1, node.output)
        enqueued = _actorq(topo, "enqueue", "st.echo", "7", "--count", "3")  # through the node's producer endpoint
        assert enqueued.returncode == EXIT_OK, enqueued.stderr
        report = _until(topo, lambda r: r["node"]["jobs"]["succeeded"] == 3 and r["node"]["activity"] == "idle",
                        "the three jobs done and the node idle")
        assert report["queues"]["default"] == {"succeeded": 3}
        entry = report["node"]
        assert (entry["running"], entry["answered"], entry["name"], entry["pid"]) == (True, True, "prof", node.pid)
        assert entry["workers"] == {"connected": 1, "restarts": 0}
        assert entry["journal"] == {"wait": 0.0, "error": None} and entry["idle"] is True
        assert entry["producers"] == {"requests": 1, "jobs": 3, "busy": 0, "dropped": {}}

        text = _status(topo).stdout
        first, *rest = _node_lines(text)
        assert first.startswith(f"node prof (pid {node.pid}): 3 succeeded, 0 failed, in flight 0, workers 1"), text
        assert rest[0] == "  idle: no ready job in its workers' queues", text
        assert rest[1] == "  producers: 1 request (3 jobs)", text
    finally:
        node.proc.terminate()
    assert node.proc.wait(timeout=60) == 0, node.output()[-2000:]

    text = _status(topo).stdout
    assert _node_lines(text) == ["no node running on this journal"], text
    entry = json.loads(_status(topo, "--json").stdout)["node"]
    assert entry["running"] is False and "does not exist" in entry["detail"], entry


def test_status_names_a_journal_write_waiting_on_sqlites_lock_and_never_calls_the_node_idle(topology) -> None:
    # generous busy_timeout: the node's writes wait for the test's lock instead of failing
    topo = topology(TASKS, processes=1, name="prof", journal_extra={"busy_timeout": 120.0})
    gate = topo.dir / "gate"
    node = NodeProcess(topo, 1, "--quiet")
    enqueue: subprocess.Popen[str] | None = None
    try:
        wait_for_node(Path(topo.config.node_file), 1, node.output)
        with Client(topo.config.journal.resolved_url, via_node=False) as client:  # written into the file
            client.enqueue(Job("st.gate", [str(gate)]))
        _until(topo, lambda r: r["node"]["jobs"]["in_flight"] == 1, "the gate job in flight")

        # another process's write transaction: the node's next writes wait for it
        holder = sqlite3.connect(topo.journal_path, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN IMMEDIATE")
            gate.touch()  # the gate job ends: its ack needs the lock
            enqueue = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", "enqueue", "--config",
                                        str(topo.toml_path), "st.echo", "8"], cwd=topo.dir,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # so does this
            report = _until(topo, lambda r: r["node"]["journal"]["wait"] >= 1.0, "a journal write waiting")
            entry = report["node"]
            assert (entry["activity"], entry["idle"]) == ("journal_waiting", False), entry
            text = _status(topo).stdout
            lines = _node_lines(text)
            assert any(line.startswith("  journal write waiting ")
                       and line.endswith(" s (a lock or the disk): jobs are not idle") for line in lines), text
            assert not any("idle:" in line for line in lines), text
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        out, err = enqueue.communicate(timeout=60)
        assert enqueue.returncode == EXIT_OK and len(out.strip()) == 32, err  # the job id: it was committed
        report = _until(topo, lambda r: r["node"]["jobs"]["succeeded"] == 2 and r["node"]["activity"] == "idle",
                        "both jobs done and the node idle again")
        assert report["queues"]["default"] == {"succeeded": 2} and report["node"]["journal"]["wait"] == 0.0
        text = _status(topo).stdout
        assert "waiting" not in text and "  idle: no ready job in its workers' queues" in text, text
    finally:
        gate.touch()
        if enqueue is not None and enqueue.poll() is None:
            enqueue.kill()
            enqueue.communicate()
        node.proc.terminate()
    assert node.proc.wait(timeout=60) == 0, node.output()[-2000:]
    assert sorted(topo.states().values()) == ["succeeded", "succeeded"]


def test_status_of_a_node_that_does_not_answer_says_so_and_still_exits_0(topology) -> None:
    topo = topology(TASKS, processes=1, name="prof")
    node = NodeProcess(topo, 1, "--quiet")
    try:
        endpoint = wait_for_node(Path(topo.config.node_file), 1, node.output)
        os.kill(node.pid, signal.SIGSTOP)  # the node's own process: its control socket goes unanswered
        try:
            text = _status(topo, "--timeout", "0.5").stdout
            entry = json.loads(_status(topo, "--json", "--timeout", "0.5").stdout)["node"]
        finally:
            os.kill(node.pid, signal.SIGCONT)
        assert _node_lines(text) == [f"node prof (pid {node.pid}): no answer from the node's control endpoint "
                                     f"{endpoint} within 0.5 s"], text
        assert (entry["running"], entry["answered"], entry["pid"]) == (True, False, node.pid), entry
        assert "within 0.5 s" in entry["detail"]
        _until(topo, lambda r: r["node"]["answered"], "the resumed node answering")
    finally:
        node.proc.terminate()
    assert node.proc.wait(timeout=60) == 0, node.output()[-2000:]


def test_render_status_never_calls_a_node_idle_while_a_write_waits() -> None:
    from actorq.jobs.runtime import Progress
    from actorq.node.status import build_status, check_status, render_status

    def progress(**changes: Any) -> Progress:
        fields: dict[str, Any] = dict(succeeded=4321, failed=2, reclaimed=0, in_flight=0, workers=2, commits=1,
                                      ops=1, worker_restarts=0, malformed=0)
        return Progress(**(fields | changes))

    waiting = build_status(progress(journal_wait=3.25), name="prof", pid=4242, per_second=118.0, stopping=False)
    assert (waiting["activity"], waiting["idle"]) == ("journal_waiting", False)
    assert render_status(check_status(waiting)) == [
        "node prof (pid 4242): 4,321 succeeded, 2 failed, in flight 0, workers 2, 118 jobs/s",
        "  journal write waiting 3.2 s (a lock or the disk): jobs are not idle",
    ]
    # a write under way for less than a second is not reported, but the node is not idle either
    writing = build_status(progress(idle=True, journal_wait=0.4), name="prof", pid=4242, per_second=None,
                           stopping=False)
    assert (writing["activity"], writing["idle"]) == ("busy", False)
    assert render_status(check_status(writing)) == [
        "node prof (pid 4242): 4,321 succeeded, 2 failed, in flight 0, workers 2"]
    idle = build_status(progress(idle=True), name="prof", pid=4242, per_second=0.0, stopping=False)
    assert (idle["activity"], idle["idle"]) == ("idle", True)
    # a reply that says idle with a write waiting (no node of ours sends one) is still not printed idle
    forged = check_status(idle | {"journal": {"wait": 2.0, "error": None}})
    assert not any("idle:" in line for line in render_status(forged))
    stopping = build_status(progress(idle=True), name="prof", pid=4242, per_second=None, stopping=True)
    assert (stopping["activity"], stopping["idle"]) == ("stopping", False)
