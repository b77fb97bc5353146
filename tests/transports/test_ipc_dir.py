"""H8: ipc endpoints live in a private 0700 directory; stale ones of dead processes are swept."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile

from actorq.transports.zmq import private_ipc_dir, sweep_stale_ipc_dirs


def test_h8_ipc_dir_is_private_and_names_its_owner() -> None:
    path = private_ipc_dir(prefix="actorq-test-h8-")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        with open(os.path.join(path, "owner.pid")) as f:
            assert int(f.read()) == os.getpid()
    finally:
        shutil.rmtree(path)


def test_dirs_of_dead_processes_are_swept_and_live_ones_kept() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tempfile.mkdtemp(prefix="actorq-test-sweep-")
    live = tempfile.mkdtemp(prefix="actorq-test-sweep-")
    foreign = tempfile.mkdtemp(prefix="actorq-test-sweep-")  # no owner.pid: not ours to touch
    with open(os.path.join(stale, "owner.pid"), "w") as f:
        f.write(str(dead_pid))
    with open(os.path.join(live, "owner.pid"), "w") as f:
        f.write(str(os.getppid()))
    try:
        assert sweep_stale_ipc_dirs("actorq-test-sweep-") == 1
        assert not os.path.exists(stale)
        assert os.path.isdir(live) and os.path.isdir(foreign)
    finally:
        for path in (stale, live, foreign):
            shutil.rmtree(path, ignore_errors=True)
