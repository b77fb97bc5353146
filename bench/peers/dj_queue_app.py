"""The Django settings module of the dj-queue benchmark (``DJANGO_SETTINGS_MODULE=dj_queue_app``).

The database comes from the environment: ``$BENCH_DJQ_SQLITE`` (a SQLite
file path) or else ``$BENCH_PG_URL`` (PostgreSQL). The task lives in
``dj_queue_tasks``. The worker topology is dj-queue's default worker entry
with 2 processes (see ``bench/peers/dj_queue.py``).
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["dj_queue"]
DATABASE_ROUTERS = ["dj_queue.routers.DjQueueRouter"]
LOGGING_CONFIG = None  # dj-queue logs through its own loggers; keep Django's console setup out of the workers

if os.environ.get("BENCH_DJQ_SQLITE"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["BENCH_DJQ_SQLITE"],
            "OPTIONS": {
                # Django's own advice for SQLite with concurrent writers: take the write lock
                # at BEGIN and wait for it; WAL so readers do not block the writer.
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
            },
        }
    }
else:
    _url = urlsplit(os.environ["BENCH_PG_URL"])
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": unquote(_url.username or ""),
            "PASSWORD": unquote(_url.password or ""),
            "HOST": _url.hostname or "",
            "PORT": str(_url.port or ""),
            "CONN_MAX_AGE": 600,  # dj-queue's PostgreSQL advice: reuse worker-thread connections
        }
    }

TASKS = {
    "default": {
        "BACKEND": "dj_queue.backend.DjQueueBackend",
        "QUEUES": [],
        "OPTIONS": {
            "workers": [{"queues": "*", "threads": 3, "processes": 2, "polling_interval": 0.1,
                         "prefetch_multiplier": 2}],
        },
    },
}
