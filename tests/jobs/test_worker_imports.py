"""A worker process loads what running tasks needs, not the node: each module it does not
load is memory that every worker of every node would hold (PEP 562 exports in `actorq` and
`actorq.journal` make this possible)."""

from __future__ import annotations

import json
import subprocess
import sys

# what a worker never uses: the node and its tree, the journal's backends and their drivers,
# the clients, the process tools of the supervisors, cron
NOT_IN_A_WORKER = ("actorq.node", "actorq.journal.sqlite", "actorq.journal.postgres", "actorq.journal.backends",
                   "actorq.jobs.client", "actorq.jobs.journal_writer", "actorq.jobs.runtime", "actorq.supervisors",
                   "sqlite3", "psycopg", "psutil", "croniter")


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout.splitlines()[-1])


def test_a_worker_process_and_a_task_module_do_not_load_the_node_or_the_journal() -> None:
    # what a worker runs (see actorq.jobs.worker's spawn command), then what a task module does
    loaded = _loaded_after("from actorq.jobs.worker import main\nimport actorq\nregistry = actorq.TaskRegistry()")
    assert "actorq.jobs.worker" in loaded and "actorq.jobs.task" in loaded
    heavy = [m for m in loaded if m.startswith(NOT_IN_A_WORKER)]
    assert heavy == []


def test_every_public_name_still_loads_on_use() -> None:
    loaded = _loaded_after("import actorq, actorq.journal\n"
                           "assert all(getattr(actorq, n) is not None for n in actorq.__all__)\n"
                           "assert all(getattr(actorq.journal, n) is not None for n in actorq.journal.__all__)\n"
                           "assert set(actorq.__all__) <= set(dir(actorq))")
    assert "actorq.node.node" in loaded and "actorq.journal.postgres" in loaded
