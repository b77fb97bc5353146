"""Framework integrations beyond the examples (examples/17-20 are run by test_examples.py).

On PostgreSQL, a Django view can enqueue in its own transaction (docs/integrations.md,
"Enqueue on commit"): `enqueue_in` on Django's psycopg 3 connection, inside
`transaction.atomic()`, commits the job with the rows or rolls it back with them. Run
in a subprocess, because `settings.configure` is once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from journal_support import PG_URL, drop_schema, new_schema_name, require_pg

pytest.importorskip("django")

SCRIPT = r'''
import json, sys
import django
from django.conf import settings
from psycopg.conninfo import conninfo_to_dict

import actorq
from actorq.journal import enqueue_in, open_journal

url, schema = sys.argv[1], sys.argv[2]
journal = open_journal(url, schema=schema)  # creates the journal's schema
info = conninfo_to_dict(url)
settings.configure(USE_TZ=True, INSTALLED_APPS=[], DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": info["dbname"], "USER": info.get("user", ""),
    "PASSWORD": info.get("password", ""), "HOST": info.get("host", ""), "PORT": info.get("port", ""),
    "OPTIONS": {"options": f"-c search_path={schema}"}}})  # the app's table beside the journal's
django.setup()
from django.db import connection, transaction

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE accounts (email TEXT PRIMARY KEY)")


def signup(email: str, fail: bool) -> actorq.Job:
    welcome = actorq.Job("accounts.welcome", [email])
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO accounts (email) VALUES (%s)", [email])
            enqueue_in(connection.connection, [welcome.to_new_job("default")], schema=schema)
            if fail:
                raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    return welcome


kept, dropped = signup("ann@example.com", fail=False), signup("bob@example.com", fail=True)
with connection.cursor() as cursor:
    cursor.execute("SELECT email FROM accounts")
    accounts = [row[0] for row in cursor.fetchall()]
print(json.dumps({"accounts": accounts, "kept": journal.get(kept.id) is not None,
                  "kept_state": str(journal.get(kept.id).state), "dropped": journal.get(dropped.id) is not None}))
journal.close()
'''


@pytest.mark.timeout(60)
def test_django_transaction_enqueues_with_its_rows_on_postgres() -> None:
    require_pg()
    schema = new_schema_name()
    try:
        run = subprocess.run([sys.executable, "-c", SCRIPT, PG_URL, schema], capture_output=True, text=True,
                             timeout=50)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == {"accounts": ["ann@example.com"], "kept": True, "kept_state": "ready",
                                          "dropped": False}
    finally:
        drop_schema(schema)
