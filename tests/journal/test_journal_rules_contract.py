"""The contract of queue rates, task rules and circuit breakers
(`actorq.journal.contract.rules_tests`), run here against SQLite, PostgreSQL and the memory
journal through conftest.py's ``backend`` and ``journal`` fixtures."""

from actorq.journal.contract.rules_tests import *  # noqa: F401,F403
