"""The README's two set-up commands, run as written in a copy of the repository.

The first must install actorq and start a node that visibly processes work:
the test waits for the progress line that counts all 20,000 jobs, then stops
the node with Ctrl-C (SIGINT to its process group) and expects a clean exit.
The second installs the test extras and runs the suite; running the suite from
inside itself would recurse, so here it is run with ``--collect-only`` to prove
that the install works and the tests are found (CI runs it in full: .ci/run
executes exactly that README line).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))


def readme_command(number: int) -> str:
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_command.py"), str(number)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def copy_repo(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def test_readme_has_two_setup_commands() -> None:
    first, second = readme_command(1), readme_command(2)
    assert "actorq run --config" in first and "pip install -e ." in first
    assert "[test" in second and "pytest" in second


@pytest.mark.timeout(420)
def test_readme_first_command_runs_a_node_that_processes_work(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    proc = subprocess.Popen(["bash", "-c", readme_command(1)], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: list[str] = []
    finished = False
    deadline = time.monotonic() + 400
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            seen.append(line)
            if re.search(r"\[actorq\] 20,000 succeeded", line):
                finished = True
                break
            if time.monotonic() > deadline:
                break
        assert finished, "no progress line counted 20,000 jobs:\n" + "".join(seen[-40:])
        assert any(re.search(r"jobs/s", line) for line in seen)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest, _ = proc.communicate(timeout=60)
        seen.append(rest)
        assert proc.returncode == 0, "".join(seen[-40:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.timeout(420)
def test_readme_second_command_installs_and_collects_the_suite(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    command = readme_command(2)
    assert command.endswith("python -m pytest")
    result = subprocess.run(["bash", "-c", command + " --collect-only -q -p no:cacheprovider"], cwd=repo,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\d+ tests? collected", result.stdout), result.stdout[-2000:]
