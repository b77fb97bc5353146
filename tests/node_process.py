"""`NodeProcess`: a real ``actorq run`` in a subprocess, for crash tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from actorq.testing import eventually


class NodeProcess:
    """``actorq run --config FILE`` as a real subprocess in its own session (process group)."""

    def __init__(self, topo, run: int, *args: str) -> None:
        self.log_path = topo.dir / f"node-run{run}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, AQTEST_RUN=str(run))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actorq.node.cli", "run", "--config", str(topo.toml_path), *args],
            cwd=topo.dir, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    @classmethod
    async def burst(cls, topo, run: int, timeout: float = 90.0) -> "NodeProcess":
        """``actorq run --burst`` until it exits by itself (its whole group is killed if the
        wait fails); returns it, with ``proc.returncode`` set."""
        node = cls(topo, run, "--burst")
        try:
            await node.exit_code(timeout=timeout)
        except BaseException:
            node.kill_everything()
            raise
        return node

    def children(self) -> list[psutil.Process]:
        """The node's worker processes right now."""
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    async def exit_code(self, timeout: float = 60.0) -> int:
        """Wait (bounded) for the node to exit; return its exit code."""
        try:
            await eventually(lambda: self.proc.poll() is not None, timeout=timeout, message="actorq run exited")
        finally:
            self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        """The node's log (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def kill_everything(self) -> None:
        """Clean-up after a failed test: SIGKILL the whole process group."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()
