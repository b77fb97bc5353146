"""Django: a view enqueues a job on transaction commit, so a rolled-back request sends none.

A view that creates a row and enqueues a job about it must not send the job
before the row is committed: a worker could run it first and not find the row,
or run it for a row that a rollback then removes. `transaction.on_commit` runs
the enqueue once the transaction commits, and never if it rolls back. The job's id
is chosen in the view (`Job.id`), so the response can name it before it is sent.
The app and the node are two processes; the app holds one `actorq.Client`.

A minimal project in one file: `settings.configure`, SQLite for Django's own
database, no models (one table made by SQL). Needs ``pip install
'actorq[integrations]'`` (Django). Run from the repository root:
python examples/19_django_on_commit.py
"""

import json
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path

import actorq
from web_demo.node import running_node

jobs: actorq.Client  # one per process, opened in main() (in a real project: at app start, after any fork)


def create_account(email: str) -> actorq.Job:
    """Insert the account and arrange its welcome mail, to be sent when the caller's transaction commits."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO accounts (email) VALUES (%s)", [email])
    welcome = actorq.Job("accounts.welcome", [email])
    transaction.on_commit(lambda: jobs.enqueue(welcome))
    return welcome


def signup(request: HttpRequest) -> JsonResponse:
    try:
        with transaction.atomic():
            welcome = create_account(request.POST["email"])
    except IntegrityError:  # the email is taken: rolled back, and the welcome job was never sent
        return JsonResponse({"error": "taken"}, status=409)
    return JsonResponse({"job": welcome.id}, status=201)  # committed, and so was the job


urlpatterns = [path("signup", signup)]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no access log lines in the output
        pass


def post(base: str, path: str, form: dict) -> tuple[int, dict]:
    request = urllib.request.Request(base + path, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


def main() -> None:
    global jobs
    workdir = Path(tempfile.mkdtemp(prefix="actorq-django-"))
    settings.configure(
        SECRET_KEY="example-only", DEBUG=False, ALLOWED_HOSTS=["127.0.0.1"], ROOT_URLCONF=__name__,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(workdir / "app.db")}},
        INSTALLED_APPS=[], MIDDLEWARE=[], USE_TZ=True,
    )
    django.setup()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE accounts (email TEXT PRIMARY KEY)")
    from django.core.wsgi import get_wsgi_application

    with running_node(workdir, "accounts") as (url, endpoint), \
            actorq.Client(url, node_endpoint=endpoint, timeout=10.0) as jobs:
        # the same code as the view's, step by step: the job is sent when the block commits
        with transaction.atomic():
            dee = create_account("dee@example.com")
            print("inside transaction.atomic(), job in the journal:", jobs.get(dee.id) is not None)
        print("after the commit, job in the journal:", jobs.get(dee.id) is not None)
        try:
            with transaction.atomic():
                eve = create_account("eve@example.com")
                raise RuntimeError("the card was declined")  # anything that rolls the transaction back
        except RuntimeError:
            pass
        print("after a rollback, job in the journal:", jobs.get(eve.id) is not None)

        server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=QuietHandler)  # any free port
        serving = threading.Thread(target=server.serve_forever)
        serving.start()
        base = f"http://127.0.0.1:{server.server_port}"
        status, created = post(base, "/signup", {"email": "ann@example.com"})
        print("POST /signup ann:", status, "job in the journal:", jobs.get(created["job"]) is not None)
        status, refused = post(base, "/signup", {"email": "ann@example.com"})
        total = sum(sum(states.values()) for states in jobs.counts().values())
        print("POST /signup ann again:", status, refused, "-> rolled back, nothing sent; jobs in the journal:", total)
        server.shutdown()
        serving.join()
        for job_id in (dee.id, created["job"]):
            print("ran:", jobs.result(job_id, timeout=10.0))
    print("app and node stopped")


main()

# Output:
# inside transaction.atomic(), job in the journal: False
# after the commit, job in the journal: True
# after a rollback, job in the journal: False
# POST /signup ann: 201 job in the journal: True
# POST /signup ann again: 409 {'error': 'taken'} -> rolled back, nothing sent; jobs in the journal: 2
# ran: welcome mail sent to dee@example.com
# ran: welcome mail sent to ann@example.com
# app and node stopped
