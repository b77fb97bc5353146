"""Tasks of examples/17_fastapi_client.py to 20_flask_client.py: what a web app hands off."""

from actorq import TaskRegistry

registry = TaskRegistry()


@registry.task("shop.quote")
def quote(items: list[str]) -> dict[str, object]:
    """Price a basket (a request waits for this one: `ask`)."""
    prices = {"tea": 3, "cake": 4, "scone": 2}
    return {"total": sum(prices[item] for item in items), "items": len(items)}


@registry.task("shop.receipt")
def receipt(order: int, email: str) -> str:
    """Mail a receipt (a request only enqueues this one and answers at once)."""
    return f"receipt for order {order} sent to {email}"


@registry.task("accounts.welcome")
def welcome(email: str) -> str:
    """Mail a new user (enqueued once their account is committed: examples/19_django_on_commit.py)."""
    return f"welcome mail sent to {email}"
