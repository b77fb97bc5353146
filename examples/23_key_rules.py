"""Rules per key: a rate and a circuit breaker for each customer, not for the whole task.

Jobs that carry an ordering or a concurrency key (examples/13_keys.py) are admitted (made
ready) while their key has a free slot. A task can add rules that each key gets for itself:

* `@task(key_rate="6/m", key_burst=2)`: each key's jobs are admitted at most 6 a minute (2 at
  once after a quiet time). A token bucket per key in the journal; a job without a token waits
  `blocked` (it is not failed) and is admitted when its key's next token is due. Shown first
  on a journal with a clock of our own, so that the arithmetic is exact.
* `@task(key_circuit_breaker=CircuitBreaker(...))`: each key's failed attempts open its own
  breaker; that key's jobs wait blocked while the other keys' run, then one probe, whose
  success closes it. `actorq status` lists the keys whose breaker is not closed.

Run from the repository root:  python examples/23_key_rules.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.journal import NewJob, SQLiteJournal
from actorq.journal.protocol import TaskDefaults
from actorq.node.config import parse_config
from actorq.testing import eventually

HERE = Path(__file__).resolve().parent


def key_rate_on_a_clock_of_our_own(workdir: Path) -> None:
    now = [0.0]
    journal = SQLiteJournal(workdir / "rate.db", clock=lambda: now[0])
    # as a node declares @registry.task("account.sync", queue="sync", key_rate="6/m", key_burst=2)
    journal.declare_tasks([TaskDefaults("account.sync", "sync", 0, 3, key_rate="6/m", key_burst=2)])
    journal.enqueue([NewJob(f"{customer}-{n}", "sync", "account.sync", b"\x90", concurrency_key=customer,
                            concurrency_limit=10) for customer in ("acme", "globex") for n in range(5)])

    def admitted() -> dict[str, int]:
        return {c: sum(journal.get(f"{c}-{n}").state != "blocked" for n in range(5)) for c in ("acme", "globex")}

    print("admitted at once:", admitted(), "(each key's burst)")
    now[0] += 10.0  # 6 a minute: one token per key in 10 s; no job finished
    journal.promote()  # a node's scheduler tick: keys whose next token is due are admitted
    print("10 s later:", admitted())
    print("waiting, not failed:", journal.counts()["sync"])
    journal.close()


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-key-rules-"))
    key_rate_on_a_clock_of_our_own(workdir)

    config = parse_config(
        {
            "node": {"name": "key-rules", "tasks": ["key_rules_demo.tasks:registry"], "log_level": "error"},
            "journal": {"url": f"sqlite:///{workdir / 'keys.db'}"},
            "workers": {"processes": 2, "concurrency": 2, "queues": ["sync"]},
        },
        source="23_key_rules.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    (workdir / "acme").write_text("down")  # acme's partner is down; globex's works
    async with actorq.Node(config) as node:
        queue = node.queue()
        for customer in ("acme", "globex"):
            await queue.enqueue_many([actorq.Job("partner.sync", [str(workdir), customer], concurrency_key=customer)
                                      for _ in range(6)])
        with actorq.Client(config.journal.url) as client:
            def settled() -> bool:
                counts = client.counts()["sync"]
                return client.key_breakers()[1] == {"open": 1} and counts.get("succeeded") == 6
            await eventually(settled, timeout=20)
            (acme,), _ = client.key_breakers()
            print(f"key {acme.key} breaker: {acme.state}; meanwhile:", client.counts()["sync"])
            (workdir / "acme").unlink()  # acme's partner is back: after the cool-down, a probe succeeds
            counts = await node.wait_idle(timeout=20.0)
            print("open key breakers:", client.key_breakers()[1])
    print("in the end:", counts["sync"])


asyncio.run(main())

# Output:
# admitted at once: {'acme': 2, 'globex': 2} (each key's burst)
# 10 s later: {'acme': 3, 'globex': 3}
# waiting, not failed: {'blocked': 4, 'ready': 6}
# key acme breaker: open; meanwhile: {'blocked': 4, 'dead': 2, 'succeeded': 6}
# open key breakers: {}
# in the end: {'dead': 2, 'succeeded': 10}
