"""Tasks of examples/16_dashboard.py: a shop's receipts, and a card that is declined."""

from actorq import TaskRegistry

registry = TaskRegistry()


@registry.task("shop.send_receipt")
def send_receipt(order: int) -> dict:
    return {"order": order, "sent": True}


@registry.task("shop.charge_card", max_attempts=1)
def charge_card(order: int, card: str) -> None:
    raise ValueError(f"card ending {card} was declined for order {order}")
