"""The dashboard's web application: one page, its assets, a JSON API (Starlette).

::

    GET  /                          the page (its CSRF token inside), sets the session cookie
    GET  /static/dashboard.{js,css} the assets, shipped in the package
    GET  /api/overview              node, tree, queues, leases by owner, schedules
    GET  /api/jobs?state=&queue=&task=&after=&limit=    a page of jobs (limit 1 to 200)
    GET  /api/jobs/{id}             one job: arguments, result, attempts, errors, traceback
    POST /api/jobs/{id}/retry|cancel
    POST /api/queues/{name}/pause|resume

Every request: the Host must be a loopback name unless a token is set (a page on another site
cannot reach this one by rebinding its DNS name), and with a token it must carry it. Every
POST: same origin (``Origin`` or ``Sec-Fetch-Site``), the session cookie and its CSRF token in
``X-CSRF-Token``, a body of at most `MAX_BODY` bytes. A bad query parameter is a 400 with one
line. Job data reaches the page as JSON and is put in it as text, never as markup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
from importlib import resources
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from actorq.errors import JournalError
from actorq.jobs.task import check_name
from actorq.journal.protocol import JobState
from actorq.node.control import NodeNotRunning
from actorq.node.dashboard.data import DEFAULT_PAGE, MAX_PAGE, DashboardData
from actorq.node.metrics import is_loopback

logger = logging.getLogger(__name__)

__all__ = ["MAX_BODY", "build_app"]

MAX_BODY = 1024  # bytes of a POST body (the actions take none)
SESSION_COOKIE = "actorq_session"
AUTH_COOKIE = "actorq_auth"
CSRF_HEADER = "x-csrf-token"
_ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_JOB_PARAMS = ("state", "queue", "task", "after", "limit")


def _finite(value: Any) -> Any:
    """`value` with every float that is not finite as None (JSON has no infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class BadRequest(Exception):
    """A request refused with a status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _asset(name: str) -> str:
    return resources.files("actorq.node.dashboard").joinpath("static", name).read_text("utf-8")


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _name(what: str, value: str) -> str:
    try:
        check_name(what, value)
    except ValueError as exc:
        raise BadRequest(400, str(exc)) from None
    if "\x00" in value:  # no journal stores it (PostgreSQL refuses it in text)
        raise BadRequest(400, f"a {what} must not contain NUL characters")
    return value


def _job_query(request: Request) -> dict[str, Any]:
    params = request.query_params
    for key in params.keys():
        if key not in _JOB_PARAMS:
            raise BadRequest(400, f"unknown query parameter {key[:40]!r}; expected one of {', '.join(_JOB_PARAMS)}")
        if len(params.getlist(key)) > 1:
            raise BadRequest(400, f"query parameter {key!r} given more than once")
    found: dict[str, Any] = {"state": None, "queue": None, "task": None, "after": None, "limit": DEFAULT_PAGE}
    if state := params.get("state"):
        try:
            found["state"] = JobState(state)
        except ValueError:
            raise BadRequest(400, f"state: expected one of {', '.join(s.value for s in JobState)}, "
                                  f"got {state[:40]!r}") from None
    for key, what in (("queue", "queue name"), ("task", "task name"), ("after", "cursor (a job id)")):
        if value := params.get(key):
            found[key] = _name(what, value)
    if (limit := params.get("limit")) is not None:
        if not (limit.isdigit() and len(limit) <= 4 and 1 <= int(limit) <= MAX_PAGE):
            raise BadRequest(400, f"limit: expected an integer from 1 to {MAX_PAGE}, got {limit[:40]!r}")
        found["limit"] = int(limit)
    return found


class _Guard:
    """The checks every request passes (see the module docstring)."""

    def __init__(self, token: str | None) -> None:
        self.secret = secrets.token_bytes(32)  # sessions last as long as the server
        self.token = token
        self.auth = None if token is None else hmac.new(token.encode(), b"actorq dashboard", hashlib.sha256).hexdigest()

    def csrf(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def check(self, request: Request) -> None:
        host = request.headers.get("host", "")
        if self.token is None:
            if not is_loopback(_host_name(host)):
                raise BadRequest(403, "this dashboard answers only to a loopback host name (localhost, 127.0.0.1, ::1)")
            return
        if request.url.path == "/" and "token" in request.query_params:
            return  # the login link: the page checks the token it carries
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self.token.encode()):
            return
        assert self.auth is not None
        if hmac.compare_digest(request.cookies.get(AUTH_COOKIE, "").encode(), self.auth.encode()):
            return
        raise BadRequest(401, "this dashboard needs its token: open /?token=TOKEN once, or send "
                              "Authorization: Bearer TOKEN")

    async def check_post(self, request: Request) -> None:
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            raise BadRequest(403, "cross-origin request refused")
        if origin is None and request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
            raise BadRequest(403, "cross-origin request refused")
        session = request.cookies.get(SESSION_COOKIE, "")
        token = request.headers.get(CSRF_HEADER, "")
        if not session or not hmac.compare_digest(token.encode(), self.csrf(session).encode()):
            raise BadRequest(403, "missing or wrong CSRF token: reload the page")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise BadRequest(413, f"request body larger than {MAX_BODY} bytes")
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise BadRequest(413, f"request body larger than {MAX_BODY} bytes")


def build_app(data: DashboardData, token: str | None = None) -> Starlette:
    """The dashboard's Starlette application on `data`.

    Args:
        data: what it reads and does.
        token: the token every request must carry (None: none, loopback host names only).
    """
    guard = _Guard(token)
    page = _asset("index.html")
    assets = {name: _asset(name) for name in _ASSETS}

    def endpoint(fn: Callable[[Request], Awaitable[Response]], post: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                guard.check(request)
                if post:
                    await guard.check_post(request)
                response = await fn(request)
            except BadRequest as exc:
                response = _JSON({"error": exc.message}, exc.status)
            except NodeNotRunning as exc:
                response = _JSON({"error": f"the node did not answer: {exc}"}, 503)
            except JournalError as exc:
                response = _JSON({"error": f"the journal: {exc}".splitlines()[0]}, 503)
            response.headers.update(_HEADERS)
            return response
        return handle

    async def index(request: Request) -> Response:
        if "token" in request.query_params and token is not None:  # the login link: set the cookie, drop the token
            given = request.query_params["token"]
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise BadRequest(401, "wrong token")
            response: Response = RedirectResponse("/", 303)
            response.set_cookie(AUTH_COOKIE, guard.auth or "", httponly=True, samesite="strict")
            return response
        session = request.cookies.get(SESSION_COOKIE, "")
        fresh = len(session) != 43
        if fresh:
            session = secrets.token_urlsafe(32)
        html = page.replace("{{csrf}}", guard.csrf(session)).replace("{{max_page}}", str(MAX_PAGE))
        response = Response(html, media_type="text/html; charset=utf-8")
        if fresh:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict")
        return response

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            raise BadRequest(404, "no such file")
        return Response(assets[name], media_type=_ASSETS[name])

    def no_params(request: Request) -> None:
        if request.query_params:
            raise BadRequest(400, "this endpoint takes no query parameters")

    async def overview(request: Request) -> Response:
        no_params(request)
        return _JSON(await run_in_threadpool(data.overview))

    async def jobs(request: Request) -> Response:
        query = _job_query(request)
        return _JSON(await run_in_threadpool(lambda: data.jobs(**query)))

    def job_id(request: Request) -> str:
        return _name("job id", request.path_params["job_id"])

    async def job(request: Request) -> Response:
        no_params(request)
        found = await run_in_threadpool(data.job, job_id(request))
        if found is None:
            raise BadRequest(404, "no such job")
        return _JSON(found)

    def act(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            no_params(request)
            ident = job_id(request)
            done, message = await run_in_threadpool(getattr(data, action), ident)
            if done is None:
                raise BadRequest(404, "no such job")
            logger.info("dashboard: job %s %s", ident, message)
            return _JSON({"id": ident, "done": done, "message": message})
        return run

    def pause(paused: bool) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            no_params(request)
            name = _name("queue name", request.path_params["queue"])
            changed, message = await run_in_threadpool(data.pause, name, paused)
            logger.info("dashboard: queue %s %s", name, message)
            return _JSON({"queue": name, "done": changed, "message": message})
        return run

    async def not_found(request: Request, exc: Exception) -> Response:
        response = _JSON({"error": "not found"}, 404)
        response.headers.update(_HEADERS)
        return response

    async def not_allowed(request: Request, exc: Exception) -> Response:
        response = _JSON({"error": "method not allowed"}, 405)
        response.headers.update(_HEADERS)
        return response

    routes = [
        Route("/", endpoint(index), methods=["GET"]),
        Route("/static/{name}", endpoint(asset), methods=["GET"]),
        Route("/api/overview", endpoint(overview), methods=["GET"]),
        Route("/api/jobs", endpoint(jobs), methods=["GET"]),
        Route("/api/jobs/{job_id}", endpoint(job), methods=["GET"]),
        Route("/api/jobs/{job_id}/retry", endpoint(act("retry"), post=True), methods=["POST"]),
        Route("/api/jobs/{job_id}/cancel", endpoint(act("cancel"), post=True), methods=["POST"]),
        Route("/api/queues/{queue}/pause", endpoint(pause(True), post=True), methods=["POST"]),
        Route("/api/queues/{queue}/resume", endpoint(pause(False), post=True), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    app.router.redirect_slashes = False  # a path is served as it is, or is a 404
    return app

