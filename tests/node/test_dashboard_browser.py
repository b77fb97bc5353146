"""The dashboard in a real headless Chromium, on a real node: the page loads, the tree and a
queue appear, a dead job is retried by clicking its button (and leaves the dead state in the
journal), and a screenshot is saved.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it). Without it the test fails; on a
developer's machine ``ACTORQ_ALLOW_NO_BROWSER=1`` turns that into a skip. The screenshot goes to
``$ACTORQ_ARTIFACTS`` (default ``tests/artifacts/``); with ``ACTORQ_UPDATE_SCREENSHOT=1`` it is
also copied to ``docs/dashboard.png``, the picture the README shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from actorq import Job, Node
from actorq.jobs.schedule import Schedule
from actorq.node.dashboard.settings import DashboardConfig
from actorq.testing import eventually

from chromium_support import Chromium, find_browser

ROOT = Path(__file__).resolve().parents[2]
TASKS = """
@registry.task("shop.send_receipt")
def send_receipt(order):
    return {"order": order, "sent": True}


from actorq import CircuitBreaker


@registry.task("shop.charge_card", max_attempts=1, circuit_breaker=CircuitBreaker(failures=5, window=60, cool_down=30))
def charge_card(order, card):
    raise ValueError(f"card ending {card} was declined for order {order}")


@registry.task("shop.sync_stock")
async def sync_stock():
    await asyncio.sleep(120)
"""


def browser_or_fail() -> str:
    binary = find_browser()
    if binary is not None:
        return binary
    if os.environ.get("ACTORQ_ALLOW_NO_BROWSER") == "1" and not os.environ.get("CI"):
        pytest.skip("chromium is not installed (ACTORQ_ALLOW_NO_BROWSER=1): apt-get install chromium to run this")
    pytest.fail("chromium is not installed: apt-get install chromium (.ci/run does); "
                "ACTORQ_ALLOW_NO_BROWSER=1 skips this test on a developer's machine")


async def test_the_page_in_chromium_retries_a_dead_job_by_click(topology):
    binary = browser_or_fail()
    topo = topology(TASKS, processes=2, queues=("default", "payments", "stock"))
    nightly = Schedule("nightly-stock", "30 2 * * *", "shop.sync_stock", (), {}, "stock", "UTC", "last")
    config = dataclasses.replace(topo.config, dashboard=DashboardConfig(bind="127.0.0.1:0"), schedules=(nightly,))
    artifacts = Path(os.environ.get("ACTORQ_ARTIFACTS") or ROOT / "tests" / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    async with Node(config) as node:
        for order in range(1001, 1013):
            await node.queue().enqueue(Job("shop.send_receipt", [order]))
        dead = await node.queue("payments").enqueue(Job("shop.charge_card", [1007, "4242"]))
        await node.wait_idle(timeout=30)
        await node.pause_queue("payments")  # the retried job then stays ready, for the journal and the picture
        running = await node.queue("stock").enqueue(Job("shop.sync_stock"))
        await eventually(lambda: topo.states()[running] == "leased", timeout=30, message="sync_stock leased")
        assert topo.states()[dead] == "dead"
        loop = asyncio.get_running_loop()
        browser = await loop.run_in_executor(None, Chromium, binary)
        try:
            await loop.run_in_executor(None, lambda: browser.send("Page.enable"))
            await loop.run_in_executor(None, lambda: browser.send("Page.navigate", url=node.dashboard.url))

            def page_shows(expression: str) -> object:
                return browser.evaluate(expression)

            async def until_page(expression: str, message: str) -> object:
                return await eventually(lambda: loop.run_in_executor(None, page_shows, expression),
                                        timeout=30, interval=0.1, message=message)

            # the tree and the queues appear
            tree = await until_page("document.querySelector('#tree li[data-id=\"workers\"]') && "
                                    "document.getElementById('tree').innerText", "the tree on the page")
            assert "supervisor one_for_one" in tree and "dispatcher" in tree and "pid " in tree
            queue = await until_page("document.querySelector('tr[data-queue=\"payments\"]')?.innerText",
                                     "the payments queue on the page")
            assert "paused" in queue and "resume" in queue
            # the default queue finished its 12 receipts within the last minute: a rate and a wait shown
            rate = await until_page("document.querySelector('tr[data-queue=\"default\"] td.rate')?.textContent",
                                    "the default queue's rate")
            wait = await loop.run_in_executor(
                None, page_shows, "document.querySelector('tr[data-queue=\"default\"] td.wait').textContent")
            assert 10 <= float(str(rate)) <= 12 and str(wait).endswith(("ms", "s")), (rate, wait)
            assert "shop.sync_stock" in await until_page("document.getElementById('leases').innerText", "leases")
            assert "nightly-stock" in await until_page("document.getElementById('schedules').innerText",
                                                       "schedules")
            breaker = await until_page("document.querySelector('#breakers tr[data-task=\"shop.charge_card\"]')?.innerText",
                                       "the card task's circuit breaker")
            assert "closed" in breaker
            # click the dead job's retry button: the journal has it ready again
            clicked = await until_page(f"(() => {{ const b = document.querySelector('tr[data-job=\"{dead}\"] "
                                       "button.retry'); if (!b) return false; b.click(); return true; })()",
                                       "the dead job's retry button")
            assert clicked is True
            await eventually(lambda: topo.states()[dead] == "ready", timeout=30, message="the retried job ready")
            await until_page(f"document.querySelector('tr[data-job=\"{dead}\"]')?.dataset.state === 'ready'",
                             "the job shown ready")
            # its detail: the error of its first attempt, and the traceback
            await loop.run_in_executor(None, page_shows,
                                       f"document.querySelector('tr[data-job=\"{dead}\"]').click()")
            detail = await until_page("!document.getElementById('detail').hidden && "
                                      "document.getElementById('detail').innerText", "the job's detail")
            assert "ValueError: card ending 4242 was declined for order 1007" in detail
            assert "Last traceback" in detail
            # a succeeded job's detail shows what its task returned (and is the picture's: no traceback with
            # this machine's paths in it)
            receipt = await node.queue().enqueue(Job("shop.send_receipt", [1013]))
            await eventually(lambda: topo.states()[receipt] == "succeeded", timeout=30, message="receipt sent")
            await until_page(f"(() => {{ const row = document.querySelector('tr[data-job=\"{receipt}\"]'); "
                             "if (!row) return false; row.click(); return true; })()", "the receipt's row")
            detail = await until_page(f"document.getElementById('detail').innerText.includes('{receipt}') && "
                                      "document.getElementById('detail').innerText", "the receipt's detail")
            assert '{"order":1013,"sent":true}' in detail
            problem = await loop.run_in_executor(None, page_shows, "document.getElementById('problem').hidden")
            assert problem is True
            shot = artifacts / "dashboard.png"
            await loop.run_in_executor(None, browser.screenshot, str(shot))
            # job data is text on the page, never markup
            markup = "<img src=x onerror=window.pwned=1>"
            hostile = await node.queue("stock").enqueue(Job("shop.charge_card", [1, markup]))
            await eventually(lambda: topo.states()[hostile] == "dead", timeout=30, message="the hostile job dead")
            shown = await until_page(f"document.querySelector('tr[data-job=\"{hostile}\"] td.err')?.textContent",
                                     "the hostile job's error on the page")
            assert markup in shown
            assert await loop.run_in_executor(None, page_shows, "document.images.length === 0 && "
                                              "window.pwned === undefined") is True
        finally:
            await loop.run_in_executor(None, browser.close)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("ACTORQ_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
        print(f"screenshot: {shot}")
        await node.cancel(running)
