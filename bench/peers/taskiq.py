"""taskiq with taskiq-redis as a benchmarked peer.

Set-up (what a taskiq user deploys on 2 cores):

- broker: taskiq-redis's ``RedisStreamBroker``, the one of its Redis brokers
  that acknowledges: messages go into a Redis stream (XADD) read through a
  consumer group (XREADGROUP), and a message stays in the group's pending list
  until the worker's XACK. (``ListQueueBroker`` pops with BRPOP: a message is
  gone from Redis when a worker takes it, so a killed worker loses what it
  held; ``PubSubBroker`` keeps nothing.) No result backend; the task is an
  ``async def``, as taskiq's docs write tasks.
- workers: ``taskiq worker taskiq_app:broker --workers 2 --log-level
  WARNING`` (WARNING so the log is not written once per task) with taskiq's
  defaults: 100 concurrent tasks per worker process (``--max-async-tasks``),
  the broker's 100 messages per XREADGROUP, ``--ack-type when_saved`` (the
  ack after the task ran and its result, none here, was handled).
- event loop: uvloop (the ``taskiq[uv]`` extra), which taskiq's worker uses
  when it is installed. Without it, taskiq 0.13's worker does not stop on
  SIGTERM: its signal handler sets an ``asyncio.Event`` from a plain
  ``signal.signal`` handler, which does not wake a stdlib loop that is
  sleeping in epoll, so a worker with an idle connection waits for ever
  (seen here: still running 20 s after SIGTERM, ``The runner is stopped``
  never logged); with uvloop it stops in well under a second.
- durability: a message a worker read but did not ack stays pending; another
  worker claims it (XAUTOCLAIM) once it has been idle for the broker's
  ``idle_timeout`` (10 min by default). So an enqueue that returned survives
  the death of any process: class "process" (the Redis server's own
  persistence is the harness's other column); delivery is at least once.
- producer: ``await noop.kiq(i)``: one XADD per job, returned once Redis
  replied. The adapter's ``enqueue`` is synchronous, so each call runs the
  coroutine on its own event loop (``loop.run_until_complete``). The producer
  calls ``broker.startup()`` first, as taskiq's docs say: that creates the
  consumer group, which starts at ``$`` (new messages only) - a message added
  before any group exists would never be delivered.
- batch: taskiq has no batch enqueue (one ``kiq`` per task), so no
  ``--batch`` row.

The stream keeps acknowledged entries (no ``maxlen`` by default), so the
jobs left after a phase are the group's pending entries plus its lag (entries
not yet delivered), not the stream's length.

Every phase empties its Redis database (FLUSHDB) at set-up and teardown: the
adapter needs a database of its own.

The app module (taskiq_app.py) is copied into the phase's workdir and the
workers' PYTHONPATH holds it and the harness, not bench/peers, where this
file's name would shadow the ``taskiq`` package.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

_PEERS = Path(__file__).resolve().parent
# this file is named like the package it benchmarks: keep bench/peers off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _PEERS]
sys.path.insert(0, str(_PEERS.parent / "harness"))

from peer import Adapter, main, spawn, stop_group  # noqa: E402

STOP_WAIT = 15.0  # seconds a graceful stop may take
REQUIREMENTS = ["taskiq[uv]==0.13.0", "uvloop==0.23.0", "taskiq-redis==1.2.4", "redis==8.1.0"]
STREAM = "taskiq"  # RedisStreamBroker's default queue_name
GROUP = "taskiq"  # and consumer_group_name


def _flush(r) -> None:
    """Empty the phase's Redis database; a server that is gone has nothing to empty."""
    import redis

    try:
        r.flushdb()
    except redis.exceptions.ConnectionError:
        pass


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to taskiq's main process only (it stops its worker processes),
    then SIGKILL what is left of its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            pass
    stop_group(proc, wait=5.0)


class TaskiqPeer(Adapter):
    name = "taskiq"
    variants = {"stream": "RedisStreamBroker: XACK after the task ran; a killed worker's messages are "
                          "claimed by another worker after the idle timeout (10 min)"}
    classes = {"stream": "process"}
    needs = ("redis",)
    storage = "Redis (stream + consumer group)"
    has_batch = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.appdir = ctx.workdir / "app"
        self.workers = []
        self.loop = None

    def _redis(self):
        import redis

        if not self.ctx.redis_url:
            raise RuntimeError("taskiq needs --redis-url")
        return redis.Redis.from_url(self.ctx.redis_url)

    def setup(self) -> None:
        self.appdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(_PEERS / "taskiq_app.py", self.appdir / "taskiq_app.py")
        self._redis().flushdb()

    def connect(self) -> None:
        self._redis()  # checks the URL is given
        os.environ["BENCH_REDIS_URL"] = self.ctx.redis_url
        spec = importlib.util.spec_from_file_location("taskiq_app", _PEERS / "taskiq_app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["taskiq_app"] = module
        spec.loader.exec_module(module)
        self.broker, self.task = module.broker, module.noop
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.broker.startup())

    def enqueue(self, i: int) -> None:
        self.loop.run_until_complete(self.task.kiq(i))

    def start_workers(self) -> None:
        env = self.ctx.env(self.appdir)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in env["PYTHONPATH"].split(os.pathsep) if p and Path(p).resolve() != _PEERS)
        env["BENCH_REDIS_URL"] = self.ctx.redis_url
        cmd = [sys.executable, "-m", "taskiq", "worker", "taskiq_app:broker", "--workers", str(self.ctx.processes),
               "--log-level", "WARNING"]
        self.workers.append(spawn(cmd, env, self.appdir, self.ctx.workdir / "worker.log"))

    def stop_workers(self) -> None:
        for proc in self.workers:
            _stop(proc)
        self.workers = []

    def remaining(self) -> int:
        r = self._redis()
        if not r.exists(STREAM):
            return 0
        left = 0
        for group in r.xinfo_groups(STREAM):
            if group["name"] in (GROUP, GROUP.encode()):
                left += int(group["pending"]) + int(group.get("lag") or 0)
        return left

    def teardown(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.broker.shutdown())
            self.loop.close()
            self.loop = None
        if self.ctx.redis_url:
            _flush(self._redis())


if __name__ == "__main__":
    main(TaskiqPeer)
