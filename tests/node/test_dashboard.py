"""The web dashboard's JSON API through a real uvicorn server, on a real node (SQLite and PostgreSQL),
on a journal with no node (``actorq dashboard``), and its configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys

import pytest

from actorq import Job, Node
from actorq.jobs.schedule import Schedule
from actorq.node.config import ConfigError, parse_config
from actorq.node.dashboard.data import MAX_PAGE, DashboardData, RemoteNode
from actorq.node.dashboard.server import DashboardServer
from actorq.node.dashboard.settings import DashboardConfig
from actorq.testing import eventually

from dashboard_support import Browser

TASKS = """
from actorq import CircuitBreaker


@registry.task("d.ok", circuit_breaker=CircuitBreaker(failures=5, window=60, cool_down=30))
def ok(n):
    return {"n": n}


@registry.task("d.boom", max_attempts=1)
def boom(card):
    raise ValueError(f"card {card} declined")


@registry.task("d.hold")
async def hold():
    await asyncio.sleep(120)


@registry.task("d.keyed", max_attempts=1, key_circuit_breaker=CircuitBreaker(failures=1, window=60, cool_down=600))
def keyed(customer):
    raise ValueError(f"{customer}'s API is down")
"""


def backend_topology(request, topology, backend: str, **settings):  # noqa: ANN001, ANN201
    if backend == "sqlite":
        return topology(TASKS, **settings)
    from journal_support import PG_URL  # tests/journal, on sys.path (tests/conftest.py)

    return topology(TASKS, journal_url=PG_URL, schema=request.getfixturevalue("pg_schema"), **settings)


def one_line(body: dict) -> str:
    assert set(body) == {"error"} and "\n" not in body["error"], body
    return body["error"]


def check_refusals(b: Browser, dead: str) -> None:
    """What the API refuses, each with its status and one line."""
    bad = {"/api/jobs?state=bogus": "state: expected one of", "/api/jobs?limit=0": "limit: expected an integer",
           f"/api/jobs?limit={MAX_PAGE + 1}": "limit: expected", "/api/jobs?limit=1e3": "limit: expected",
           "/api/jobs?color=red": "unknown query parameter 'color'", "/api/jobs?queue=a&queue=b": "more than once",
           "/api/jobs?queue=" + "q" * 300: "at most 255 characters", "/api/overview?x=1": "no query parameters"}
    for path, text in bad.items():
        assert text in one_line(b.get(path, expect=400)), path
    assert one_line(b.get("/api/jobs/no-such-job", expect=404)) == "no such job"
    assert one_line(b.get("/api/nothing", expect=404)) == "not found"
    assert one_line(b.get(f"/api/jobs/{dead}/retry", expect=405)) == "method not allowed"
    # a host name that is not loopback: a page on another site rebinding its name to 127.0.0.1
    status, _, body = b.request("/api/overview", headers={"Host": "evil.example:80"})
    assert status == 403 and "loopback host name" in one_line(json.loads(body))
    # POSTs: the CSRF token, same origin, a small body
    assert "CSRF" in one_line(b.post(f"/api/jobs/{dead}/retry", expect=403, csrf=False))
    assert "CSRF" in one_line(b.post(f"/api/jobs/{dead}/retry", expect=403, X_CSRF_Token="0" * 64))
    host = b.url.removeprefix("http://")
    assert "cross-origin" in one_line(b.post(f"/api/jobs/{dead}/retry", expect=403, Origin="http://evil.example"))
    assert "cross-origin" in one_line(b.post(f"/api/jobs/{dead}/retry", expect=403, Sec_Fetch_Site="cross-site"))
    status, _, body = b.request(f"/api/jobs/{dead}/retry", "POST", b"x" * 5000, {"X-CSRF-Token": b.csrf,
                                                                                "Origin": f"http://{host}"})
    assert status == 413 and "larger than" in one_line(json.loads(body))
    assert one_line(b.post("/api/jobs/no-such-job/retry", expect=404)) == "no such job"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_api_of_a_real_node(request, topology, backend):
    topo = backend_topology(request, topology, backend, processes=1, queues=("default", "emails"))
    nightly = Schedule("nightly", "30 2 * * *", "d.ok", (7,), {}, None, "UTC", "last")
    config = dataclasses.replace(topo.config, dashboard=DashboardConfig(bind="127.0.0.1:0"), schedules=(nightly,))
    async with Node(config) as node:
        assert node.dashboard is not None
        oks = [await node.queue().enqueue(Job("d.ok", [n])) for n in range(3)]
        dead = await node.queue("emails").enqueue(Job("d.boom", ["4242"]))
        keyed = await node.queue().enqueue(Job("d.keyed", ["acme"], ordering_key="acme"))  # opens acme's breaker
        await node.wait_idle(timeout=30)
        held = await node.queue().enqueue(Job("d.hold"))
        await eventually(lambda: topo.states()[held] == "leased", timeout=30, message="d.hold leased")

        def check(url: str) -> None:
            b = Browser(url)
            page = b.page()
            assert '<script src="/static/dashboard.js"' in page and "cdn" not in page.lower()
            status, headers, js = b.request("/static/dashboard.js")
            assert status == 200 and b"textContent" in js
            assert "default-src 'none'" in headers["content-security-policy"]
            view = b.get("/api/overview")
            tree = view["tree"]
            assert tree["id"] == "node" and tree["strategy"] == "one_for_one"
            assert [c["id"] for c in tree["children"]] == ["core", "workers"]
            workers = tree["children"][1]["children"]
            assert len(workers) == 1 and isinstance(workers[0]["pid"], int)
            assert view["node"]["name"] == "testnode" and view["node_problem"] is None
            assert view["queues"]["default"]["states"]["succeeded"] == 3
            minute = view["queues"]["default"]["last_minute"]  # the journal's slots of the last minute
            # the three d.ok, and d.keyed's one attempt that failed
            assert (minute["finished"], minute["failed"]) == (4, 1) and minute["leased"] >= 4
            assert view["queues"]["emails"]["states"] == {"dead": 1} and not view["queues"]["emails"]["paused"]
            assert [(lease["jobs"][0]["id"], len(lease["jobs"])) for lease in view["leases"]] == [(held, 1)]
            assert view["leases"][0]["owner"]
            assert [(s["name"], s["task"]) for s in view["schedules"]] == [("nightly", "d.ok")]
            assert view["schedules"][0]["next_fire"] > view["now"]
            # d.ok declares a breaker, which its successes leave closed; the others declare none
            assert [(b["task"], b["state"], b["failures"]) for b in view["breakers"]] == [("d.ok", "closed", 0)]
            # the per-key breaker d.keyed's failure opened, for its key only
            assert [(b["task"], b["key"], b["state"]) for b in view["key_breakers"]] == [("d.keyed", "acme", "open")]
            assert view["key_breaker_counts"] == {"open": 1}
            # jobs: filters and pages
            assert sorted(j["id"] for j in b.get("/api/jobs?state=dead")["jobs"]) == sorted([dead, keyed])
            first = b.get("/api/jobs?task=d.ok&limit=2")
            assert [j["id"] for j in first["jobs"]] == oks[:2] and first["next"] == oks[1]
            rest = b.get(f"/api/jobs?task=d.ok&limit=2&after={first['next']}")
            assert [j["id"] for j in rest["jobs"]] == oks[2:] and rest["next"] is None
            assert b.get("/api/jobs?queue=emails&state=succeeded")["jobs"] == []
            detail = b.get(f"/api/jobs/{dead}")
            assert detail["args"] == ["4242"] and detail["state"] == "dead"
            assert [e["error"] for e in detail["errors"]] == ["ValueError: card 4242 declined"]
            assert "ValueError" in detail["last_traceback"]
            assert b.get(f"/api/jobs/{oks[1]}")["result"] == {"n": 1}
            assert b.get(f"/api/jobs/{held}")["lease"]["owner"] == view["leases"][0]["owner"]
            check_refusals(b, dead)
            # actions: pause emails, retry the dead job (it stays ready), cancel the held one
            assert b.post("/api/queues/emails/pause") == {"queue": "emails", "done": True, "message": "paused"}
            assert b.post("/api/queues/emails/pause")["message"] == "was already paused"
            assert b.get("/api/overview")["queues"]["emails"]["paused"]
            assert b.post(f"/api/jobs/{dead}/retry")["done"] is True
            assert topo.states()[dead] == "ready"
            assert b.post(f"/api/jobs/{dead}/retry")["message"] == "is ready, not dead or failed: left as it is"
            assert b.post(f"/api/jobs/{held}/cancel") == {"id": held, "done": True, "message": "cancelled"}
            assert topo.states()[held] == "cancelled"
            assert b.post(f"/api/jobs/{held}/cancel")["message"] == "had already finished (cancelled): nothing to cancel"
            assert b.post("/api/queues/emails/resume")["message"] == "resumed"

        await asyncio.get_running_loop().run_in_executor(None, check, node.dashboard.url)
        await node.wait_idle(timeout=30)  # the retried job ran again, and failed again
        assert [e for e in topo.info(dead).errors] == ["ValueError: card 4242 declined"] * 2
    assert node.dashboard is None


async def test_actorq_dashboard_serves_a_journal_with_no_node(topology):
    topo = topology(TASKS, processes=1)
    async with Node(topo.config) as node:
        dead = await node.queue().enqueue(Job("d.boom", ["1"]))
        big = await node.queue().enqueue(Job("d.ok", ["x" * 100_000]))
        await node.wait_idle(timeout=30)
    proc = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", "dashboard", "--config", str(topo.toml_path),
                             "--bind", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=topo.dir)
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert line.startswith("actorq dashboard: serving sqlite:///") and "(Ctrl-C stops)" in line, line
        url = line.split(" at ")[1].split()[0]

        def check() -> None:
            b = Browser(url)
            b.page()
            view = b.get("/api/overview")
            assert view["tree"] is None and view["node"] is None
            assert view["node_problem"].startswith("no node is running on this journal")
            assert view["queues"]["default"]["states"] == {"dead": 1, "succeeded": 1}
            detail = b.get(f"/api/jobs/{big}")  # arguments and results beyond 64 KiB of JSON are not sent
            assert detail["args"] is None and detail["kwargs"] is None and detail["result"] is None
            assert detail["payload_problem"].startswith("100,006 characters of JSON: too large to show here")
            assert detail["result_problem"].startswith("100,009 characters of JSON: too large")
            assert b.post(f"/api/jobs/{dead}/retry")["done"] is True
            assert b.post("/api/queues/default/pause")["done"] is True

        await asyncio.get_running_loop().run_in_executor(None, check)
        assert topo.states()[dead] == "ready"
        with topo.client() as client:
            assert client.paused_queues() == ["default"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_actorq_dashboard_refuses_a_bind_beyond_loopback_without_a_token(tmp_path):
    toml = tmp_path / "topology.toml"
    toml.write_text(f'[journal]\nurl = "sqlite:///{tmp_path / "j.db"}"\n')
    out = subprocess.run([sys.executable, "-m", "actorq.node.cli", "dashboard", "--config", str(toml),
                          "--bind", "0.0.0.0:0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "actorq dashboard: --bind: 0.0.0.0 is not a loopback address and no token is set: set dashboard.token "
        "or dashboard.token_env to serve the dashboard beyond this machine"]
    out = subprocess.run([sys.executable, "-m", "actorq.node.cli", "dashboard", "--config", str(toml),
                          "--bind", "127.0.0.1:70000"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--bind: expected HOST:PORT" in out.stderr


def test_a_token_is_asked_of_every_request(topology):
    topo = topology(TASKS)
    token = "tok-" + "x" * 20
    server = DashboardServer(DashboardData(topo.config, RemoteNode(topo.config)), "127.0.0.1:0", token)
    server.start()
    try:  # no journal yet: the API says so (503, one line)
        b = Browser(server.url)
        status, _, body = b.request("/api/overview", headers={"Authorization": f"Bearer {token}"})
        assert status == 503 and one_line(json.loads(body)).startswith("the journal: ")
    finally:
        server.stop()
    topo.client().close()  # makes the journal
    server = DashboardServer(DashboardData(topo.config, RemoteNode(topo.config)), "127.0.0.1:0", token)
    server.start()
    try:
        b = Browser(server.url)
        for path in ("/", "/api/overview", "/static/dashboard.js"):
            status, _, body = b.request(path)
            assert status == 401 and "needs its token" in one_line(json.loads(body)), path
        assert b.request("/?token=wrong-token-xxxxxxxxxxxx")[0] == 401
        assert b.get("/api/overview", expect=401)
        status, _, _ = b.request("/api/overview", headers={"Authorization": f"Bearer {token}"})
        assert status == 200
        status, headers, _ = b.request(f"/?token={token}")
        assert status == 303 and headers["location"] == "/" and "HttpOnly" in headers["set-cookie"]
        assert token not in headers["set-cookie"]
        b.page()  # the cookie now
        assert b.get("/api/overview")["tree"] is None
        # with a token, any host name may be used (the bind may be beyond loopback)
        status, _, _ = b.request("/api/overview", headers={"Host": "jobs.internal:80"})
        assert status == 200
    finally:
        server.stop()


def test_dashboard_settings_are_checked(monkeypatch):
    def parse(table: dict) -> object:
        return parse_config({"dashboard": table}, source="t.toml")

    assert parse({}).dashboard == DashboardConfig()
    with pytest.raises(ConfigError, match=r"^t.toml: dashboard.bind: 0.0.0.0 is not a loopback address and no "
                                          r"token is set: set dashboard.token or dashboard.token_env"):
        parse({"bind": "0.0.0.0:8642"})
    assert parse({"bind": "0.0.0.0:8642", "token": "t" * 16}).dashboard.resolved_token() == "t" * 16
    for table, text in (({"bind": "127.0.0.1"}, "dashboard.bind: expected HOST:PORT"),
                        ({"bind": "127.0.0.1:65536"}, "dashboard.bind: expected HOST:PORT"),
                        ({"bind": 8642}, "dashboard.bind: expected a string"),
                        ({"token": "short"}, "dashboard.token: expected 16 to 1024 characters, got 5"),
                        ({"token": "has a space in it!!"}, "dashboard.token: expected printable ASCII"),
                        ({"token_env": "1BAD"}, "dashboard.token_env: expected an environment variable name"),
                        ({"token": "t" * 16, "token_env": "X"}, "dashboard.token_env: set dashboard.token or"),
                        ({"bind": "127.0.0.1:1", "token_env": "AQ_NOT_SET_X"},
                         "dashboard.token_env: the environment variable AQ_NOT_SET_X is not set or empty"),
                        ({"port": 1}, "dashboard.port: unknown key")):
        with pytest.raises(ConfigError) as caught:
            parse(table)
        assert text in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
        assert "short" not in str(caught.value)  # a token is never echoed
    monkeypatch.setenv("AQ_DASH_TOKEN", "e" * 20)
    config = parse({"bind": "[::]:0", "token_env": "AQ_DASH_TOKEN"})
    assert config.dashboard.resolved_token() == "e" * 20
    assert "e" * 20 not in repr(config.dashboard)


async def test_a_port_in_use_is_a_config_error(topology):
    topo = topology(TASKS, processes=1)
    busy = DashboardServer(DashboardData(topo.config, RemoteNode(topo.config)), "127.0.0.1:0")
    busy.listen()
    try:
        host, port = busy.address
        config = dataclasses.replace(topo.config, dashboard=DashboardConfig(bind=f"{host}:{port}"))
        with pytest.raises(ConfigError, match=rf"dashboard.bind: cannot serve the dashboard at {host}:{port}: "):
            await Node(config).start()
    finally:
        busy.stop()


async def test_missing_web_stack_is_one_line_naming_the_key(topology, monkeypatch):
    topo = topology(TASKS)
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else 1)
    node = Node(dataclasses.replace(topo.config, dashboard=DashboardConfig(bind="127.0.0.1:0")))
    with pytest.raises(ConfigError) as caught:
        await node.start()
    assert str(caught.value) == (f"{topo.toml_path}: dashboard.bind: serving the dashboard needs starlette and "
                                 "uvicorn: pip install 'actorq[dashboard]'")
    assert node.runtime is None  # refused before anything started


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_hostile_requests_get_an_answer_never_a_server_error(request, topology, backend, rng):
    topo = backend_topology(request, topology, backend)
    topo.client().close()  # makes the journal
    server = DashboardServer(DashboardData(topo.config, RemoteNode(topo.config)), "127.0.0.1:0")
    server.start()
    try:
        b = Browser(server.url)
        b.page()
        pieces = ["%00", "%ff", "%ED%A0%80", "%0d%0a", "'", '"', "<", "%25", "..%2f", "%C3%A9", "x" * 300, "%F0%9F%98%80",
                  "-1", "1e9", "99999", "", "&", "=", "+", "%20"]
        seen = set()
        for _ in range(80):
            value = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))
            key = rng.choice(["state", "queue", "task", "after", "limit", "x", "state%00"])
            path = rng.choice([f"/api/jobs?{key}={value}", f"/api/jobs/{value or 'j'}",
                               f"/api/queues/{value or 'q'}/pause", f"/api/jobs/{value or 'j'}/cancel"])
            if "/pause" in path or "/cancel" in path:
                status, _, body = b.request(path, "POST", b"", {"X-CSRF-Token": b.csrf})
            else:
                status, _, body = b.request(path)
            seen.add(status)
            assert status in (200, 400, 404), (path, status, body)
            if status != 200:
                one_line(json.loads(body))
        assert {200, 400, 404} <= seen, seen
        assert one_line(b.get("/api/overview/", expect=404)) == "not found"  # no redirect to another path
        for path in ("/api/jobs/a%00b", "/api/jobs?queue=a%00", "/api/jobs?after=%00"):  # PostgreSQL refuses NUL
            assert "NUL" in one_line(b.get(path, expect=400))
        status, _, _ = b.request("/api/jobs?queue=" + "q" * 20_000)  # a request head past 16 KiB
        assert status in (400, 431)
    finally:
        server.stop()
