"""Tasks of examples/08_retries.py: which errors are retried, and after how long."""

from actorq import PermanentError, Retry, RetryPolicy, TaskRegistry, current_job

registry = TaskRegistry()


class CardDeclined(PermanentError):
    """No retry will change the bank's answer."""


@registry.task("retries.charge", retry=RetryPolicy.fixed(0.1), retry_on=(ConnectionError,), max_attempts=5)
def charge(card: str) -> str:
    if card == "declined":
        raise CardDeclined(f"card {card!r} was declined")
    if card == "malformed":
        raise ValueError(f"card {card!r} is not a card number")  # not in retry_on: failed at once
    if current_job().attempt < 3:
        raise ConnectionError("the bank did not answer")  # retried: twice, then it works
    return "charged"


@registry.task("retries.poll", max_attempts=10)
async def poll(feed: str) -> None:
    raise Retry(delay=3600, reason=f"{feed} said: come back in an hour")


def slower_each_time(attempt: int, exc: BaseException) -> float:
    """Runs in the worker: its value travels with the attempt's ACK."""
    return 600.0 * attempt


@registry.task("retries.sync", retry=slower_each_time, max_attempts=3)
async def sync(account: str) -> None:
    raise TimeoutError(f"the CRM did not answer for {account}")
