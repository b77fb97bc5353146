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
import os
import sys
from pathlib import Path

_PEERS = Path(__file__).resolve().parent
sys.path.insert(0, str(_PEERS.parent / "harness"))  # importing peer takes bench/peers off the path

import redispeer  # noqa: E402
from peer import Adapter, main, spawn, load_module  # noqa: E402

REQUIREMENTS = ["taskiq[uv]==0.13.0", "uvloop==0.23.0", "taskiq-redis==1.2.4", "redis==8.1.0"]
STREAM = "taskiq"  # RedisStreamBroker's default queue_name
GROUP = "taskiq"  # and consumer_group_name


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
        return redispeer.client(self.ctx, self.name)

    def setup(self) -> None:
        self.ctx.app("taskiq_app.py")  # into self.appdir
        self._redis().flushdb()

    def connect(self) -> None:
        self._redis()  # checks the URL is given
        os.environ["BENCH_REDIS_URL"] = self.ctx.redis_url
        module = load_module("taskiq_app")
        self.broker, self.task = module.broker, module.noop
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.broker.startup())

    def enqueue(self, i: int) -> None:
        self.loop.run_until_complete(self.task.kiq(i))

    def start_workers(self) -> None:
        env = self.ctx.env(self.appdir)
        env[redispeer.URL_ENV] = self.ctx.redis_url
        cmd = [sys.executable, "-m", "taskiq", "worker", "taskiq_app:broker", "--workers", str(self.ctx.processes),
               "--log-level", "WARNING"]
        self.workers.append(spawn(cmd, env, self.appdir, self.ctx.workdir / "worker.log"))

    def stop_workers(self) -> None:
        redispeer.stop(self.workers)
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
            redispeer.flush(self.ctx, self.name)


if __name__ == "__main__":
    main(TaskiqPeer)
