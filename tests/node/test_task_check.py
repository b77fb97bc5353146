"""The task import check killed at start-up is not a mistake in ``node.tasks``.

``actorq run`` and ``actorq check`` import the task modules in a child process
first. When something outside kills that child (the OOM killer, an operator),
nothing is known to be wrong with the modules: the command says so in one line
and exits with its own code, so that a supervisor or a script may try again,
instead of blaming ``node.tasks`` with the configuration error's code.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from actorq.node.constants import EXIT_RETRY
from actorq.testing import eventually

SLOW_TASKS = '''
import time

import actorq

time.sleep(60)  # long enough for the test to find this process and kill it
registry = actorq.TaskRegistry()
'''


def _check_child(pid: int) -> psutil.Process | None:
    """The task import check process started by the ``actorq`` process `pid`, once it runs."""
    for child in psutil.Process(pid).children():
        try:
            if any("_check_main" in part for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.parametrize("command", ["run", "check"])
async def test_a_killed_task_import_check_says_so_in_one_line_and_exits_with_its_own_code(
        tmp_path: Path, command: str) -> None:
    (tmp_path / "slow_tasks.py").write_text(SLOW_TASKS)
    config = tmp_path / "topology.toml"
    config.write_text('[node]\ntasks = ["slow_tasks"]\nlog_level = "warning"\n'
                      f'[journal]\nurl = "sqlite:///{tmp_path / "journal.db"}"\n[workers]\nprocesses = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", command, "--config", str(config)],
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        child = await eventually(lambda: _check_child(proc.pid), timeout=60, message="the import check runs")
        child.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_RETRY, stderr
    assert stderr.splitlines() == [
        "actorq: the task import check process was killed by SIGKILL; not a problem in node.tasks: try again"]
    assert not (tmp_path / "journal.db").exists()  # it stopped before touching the journal
