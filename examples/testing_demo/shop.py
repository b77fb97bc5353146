"""A tiny shop that runs its work as actorq jobs: the application under test.

`Shop` takes its producer as an argument (an `actorq.Client` in production, a
`actorq.testing.TaskRecorder` in tests), so its code is the same in both.
"""

from __future__ import annotations

from typing import Any

import actorq

tasks = actorq.TaskRegistry()
OUTBOX: list[tuple[str, str]] = []  # receipts "sent" (a real app would call its mail service)
LEDGER: dict[str, int] = {}  # payments taken, by order id


class CardDeclined(actorq.PermanentError):
    """No retry mends a declined card."""


@tasks.task("shop.charge", queue="payments", max_attempts=3)
def charge(order_id: str, amount_cents: int) -> str:
    if amount_cents <= 0:
        raise CardDeclined(f"order {order_id}: nothing to charge")
    LEDGER[order_id] = LEDGER.get(order_id, 0) + amount_cents
    return f"paid-{order_id}"


@tasks.task("shop.send_receipt", queue="emails", max_attempts=5)
def send_receipt(order_id: str, email: str) -> None:
    OUTBOX.append((order_id, email))


@tasks.task("shop.remind", queue="emails")
def remind(order_id: str) -> None:
    OUTBOX.append((order_id, "reminder"))


class Shop:
    """Places orders: a charge now, a receipt after it, a reminder a day later."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs  # anything with enqueue(job) -> id: a Client, or a TaskRecorder

    def place_order(self, order_id: str, email: str, amount_cents: int) -> str:
        charge_id = self.jobs.enqueue(charge.job(order_id, amount_cents))
        self.jobs.enqueue(actorq.Job("shop.send_receipt", (order_id,), {"email": email},
                                     unique_key=f"receipt:{order_id}"))
        self.jobs.enqueue(actorq.Job("shop.remind", (order_id,), delay=86_400))
        return charge_id


def nightly_report(journal_url: str) -> str:
    """Code that makes its own client from a URL (a script, a cron entry)."""
    with actorq.Client(journal_url) as client:
        job_id = client.enqueue(charge.job("nightly", 1))
        return f"report charge {client.result(job_id)}"


async def express_checkout(journal_url: str, order_id: str, cents: int) -> str:
    """Async code with its own client (a web handler): enqueue and await the value with `ask`."""
    async with actorq.AsyncClient(journal_url) as client:
        return await client.ask(charge.job(order_id, cents))
