"""The journal contract (`actorq.journal.contract.journal_tests`), run here against SQLite,
PostgreSQL and the memory journal through conftest.py's ``backend`` and ``journal`` fixtures.

The tests ship in the package so that a third-party backend runs the same ones; a test
added to the contract goes there.
"""

from actorq.journal.contract.journal_tests import *  # noqa: F401,F403
