"""Tasks of examples/23_key_rules.py: a sync with each customer's partner account, which fails
while a flag file says that customer's partner is down."""

import os

from actorq import CircuitBreaker, TaskRegistry

registry = TaskRegistry()


# One sync per customer at a time (the job's concurrency key), and a breaker per customer:
# after 2 failed attempts within a minute, that customer's syncs wait blocked for 1.5 s, then
# one probe. (A real cool-down is tens of seconds.) Other customers' syncs run meanwhile.
@registry.task("partner.sync", queue="sync", max_attempts=1, concurrency_limit=1,
               key_circuit_breaker=CircuitBreaker(failures=2, window=60, cool_down=1.5, probes=1))
def sync(flag_dir: str, customer: str) -> None:
    if os.path.exists(os.path.join(flag_dir, customer)):
        raise ConnectionError(f"the partner of {customer} is down")
