"""Cron schedules: one from the topology file, one added at run time; each fire time is one job.

Run from the repository root:  python examples/04_schedules.py
"""

import asyncio
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-cron-"))
    config = parse_config(
        {
            "node": {"name": "cron", "tasks": ["quickstart.quickstart_tasks:registry"], "log_level": "warning"},
            "journal": {"url": f"sqlite:///{workdir / 'cron.db'}"},
            "workers": {"processes": 1, "concurrency": 4},
            # as [[schedules]] tables in topology.toml; six fields: the last one is seconds
            "schedules": [{"name": "heartbeat", "cron": "* * * * * *", "task": "quickstart.add", "args": [2, 3]}],
        },
        source="04_schedules.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        # added at run time, kept in the journal until removed
        await node.schedules.add(actorq.Schedule(
            "weekday-report", "0 9 * * 1-5", "quickstart.checksum", args=["report"],
            timezone="Europe/Berlin", catch_up="none"))
        for info in await node.schedules.list():
            s = info.schedule
            print(f"{s.name}: {s.cron!r} in {s.timezone}, catch_up={s.catch_up}, from the {info.source}")
        report = next(i for i in await node.schedules.list() if i.schedule.name == "weekday-report")
        at = datetime.fromtimestamp(report.next_fire, ZoneInfo("Europe/Berlin"))
        print("next report: a weekday at", at.strftime("%H:%M"), "Berlin time:", at.isoweekday() <= 5)
        # the heartbeat fires every second, once per second, on the node that leads
        deadline = time.monotonic() + 30
        while (await node.counts()).get("default", {}).get("succeeded", 0) < 3:
            assert time.monotonic() < deadline, "the heartbeat did not run"
            await asyncio.sleep(0.1)
        print("heartbeat jobs ran: 3 or more")
        await node.schedules.remove("weekday-report")
        print("left:", [i.schedule.name for i in await node.schedules.list()])
    print("node stopped cleanly")


asyncio.run(main())

# Output:
# heartbeat: '* * * * * *' in UTC, catch_up=last, from the file
# weekday-report: '0 9 * * 1-5' in Europe/Berlin, catch_up=none, from the api
# next report: a weekday at 09:00 Berlin time: True
# heartbeat jobs ran: 3 or more
# left: ['heartbeat']
# node stopped cleanly
