"""Rules in the lease: a queue's rate, a task's concurrency, a task's circuit breaker.

Each is enforced where it cannot be bypassed: in the journal's lease transaction, so it holds
across worker processes and across nodes on one PostgreSQL.

* `[queues.NAME] rate = "100/m"` (and `burst`) in topology.toml: a token bucket in the journal,
  refilled by the journal's clock. Shown first on a journal with a clock of our own, so that
  the arithmetic is exact: a lease takes at most the bucket's whole tokens.
* `@task(concurrency=2)`: at most 2 jobs of the task leased at once, every node together.
* `@task(circuit_breaker=CircuitBreaker(...))`: after 3 failed attempts within the window the
  task's jobs wait (ready, not failed) for the cool-down, then one probe at a time; the
  probe's success closes it. `actorq status` shows where each breaker stands.

Run from the repository root:  python examples/15_rates_and_breakers.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.journal import NewJob, QueueLimits, SQLiteJournal
from actorq.node.config import parse_config
from actorq.testing import Ledger, eventually

HERE = Path(__file__).resolve().parent


def rate_on_a_clock_of_our_own(workdir: Path) -> None:
    now = [0.0]
    journal = SQLiteJournal(workdir / "rate.db", clock=lambda: now[0])
    journal.declare_queues([QueueLimits("api", rate="100/m", burst=5)])  # as [queues.api] would
    journal.enqueue([NewJob(f"call-{n}", "api", "api.call", b"\x90") for n in range(20)])
    print("leased at once:", len(journal.lease(["api"], "worker", 20, 60.0)), "(the burst)")
    print("a moment later:", len(journal.lease(["api"], "worker", 20, 60.0)),
          f"(next token in {journal.rate_wait:.1f} s)")
    now[0] += 3.0  # 100 a minute: 5 tokens in 3 s
    print("3 s later:", len(journal.lease(["api"], "worker", 20, 60.0)))
    print("waiting, not failed:", journal.counts()["api"])
    journal.close()


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-rules-"))
    rate_on_a_clock_of_our_own(workdir)

    config = parse_config(
        {
            "node": {"name": "rules", "tasks": ["rules_demo.tasks:registry"], "log_level": "error"},
            "journal": {"url": f"sqlite:///{workdir / 'rules.db'}"},
            "workers": {"processes": 2, "concurrency": 4, "queues": ["work"]},  # 8 could run at once
        },
        source="15_rates_and_breakers.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    ledger = Ledger(workdir / "runs.txt")
    flag = workdir / "partner-down"
    flag.write_text("down")
    async with actorq.Node(config) as node:
        queue = node.queue()
        await queue.enqueue_many([actorq.Job("reports.build", [str(ledger.path)]) for _ in range(10)])
        await queue.enqueue_many([actorq.Job("partner.call", [str(flag)]) for _ in range(4)])
        with actorq.Client(config.journal.url) as client:
            await eventually(lambda: [b.state for b in client.breakers()] == ["open"], timeout=20)
            print("partner breaker:", client.breakers()[0].state)
            flag.unlink()  # the partner is back: the next probe succeeds
            counts = await node.wait_idle(timeout=20.0)
            print("partner breaker:", client.breakers()[0].state)
    print("succeeded:", counts["work"]["succeeded"])
    running = most = 0
    for entry in ledger.read():  # the file's order is the order they ran in
        running += 1 if entry.tag == "start" else -1
        most = max(most, running)
    print("reports at once, at most:", most)


asyncio.run(main())

# Output:
# leased at once: 5 (the burst)
# a moment later: 0 (next token in 0.6 s)
# 3 s later: 5
# waiting, not failed: {'leased': 10, 'ready': 10}
# partner breaker: open
# partner breaker: closed
# succeeded: 14
# reports at once, at most: 2
