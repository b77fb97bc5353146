"""The shop's tests: what was enqueued, then what running it did, without a node or a file."""

from __future__ import annotations

import asyncio

import pytest
import shop

import actorq
from actorq.testing import ManualClock, TaskRecorder


def test_an_order_enqueues_a_charge_a_receipt_and_a_reminder(actorq_recorder: TaskRecorder) -> None:
    shop.Shop(actorq_recorder).place_order("o1", "ann@example.com", 1250)
    actorq_recorder.assert_enqueued(task="shop.charge", args=["o1", 1250], count=1)
    actorq_recorder.assert_enqueued(task="shop.send_receipt", args=["o1"], kwargs={"email": "ann@example.com"})
    [reminder] = actorq_recorder.assert_enqueued(task="shop.remind")
    assert reminder.state is actorq.JobState.SCHEDULED and reminder.queue == "emails"
    assert shop.OUTBOX == []  # recorded, nothing ran yet


def test_drain_runs_what_is_due_and_the_clock_brings_the_rest(actorq_recorder: TaskRecorder,
                                                              actorq_clock: ManualClock) -> None:
    charge_id = shop.Shop(actorq_recorder).place_order("o2", "bob@example.com", 900)
    assert actorq_recorder.drain().ran == 2  # the charge and the receipt; the reminder waits a day
    assert shop.LEDGER == {"o2": 900} and shop.OUTBOX == [("o2", "bob@example.com")]
    assert actorq_recorder.result(charge_id) == "paid-o2"
    actorq_clock.advance(86_400)
    assert actorq_recorder.drain().ran == 1
    assert shop.OUTBOX[-1] == ("o2", "reminder")


def test_a_receipt_is_sent_once_however_often_the_order_is_placed(actorq_recorder: TaskRecorder) -> None:
    app = shop.Shop(actorq_recorder)
    app.place_order("o3", "cy@example.com", 100)
    app.place_order("o3", "cy@example.com", 100)  # the unique key holds while the first is live
    actorq_recorder.assert_enqueued(task="shop.send_receipt", count=1)
    actorq_recorder.drain()
    assert shop.OUTBOX.count(("o3", "cy@example.com")) == 1


def test_a_declined_card_fails_the_job_for_good(actorq_recorder: TaskRecorder) -> None:
    charge_id = shop.Shop(actorq_recorder).place_order("o4", "dee@example.com", 0)
    with pytest.raises(shop.CardDeclined):
        actorq_recorder.drain()
    assert actorq_recorder.get(charge_id).state is actorq.JobState.FAILED  # PermanentError: no retry
    with pytest.raises(actorq.JobFailed):
        actorq_recorder.result(charge_id)
    assert actorq_recorder.drain(raise_errors=False).failed == []  # the receipt still runs
    assert shop.OUTBOX == [("o4", "dee@example.com")]


def test_inline_mode_runs_each_job_as_it_is_enqueued(actorq_inline: TaskRecorder) -> None:
    shop.Shop(actorq_inline).place_order("o5", "eve@example.com", 700)
    assert shop.LEDGER == {"o5": 700} and shop.OUTBOX == [("o5", "eve@example.com")]
    actorq_inline.refute_enqueued(task="shop.remind", kwargs={"never": True})


def test_a_queue_ref_s_tell_is_recorded_too(actorq_recorder: TaskRecorder) -> None:
    actorq_recorder.queue("urgent").tell(shop.charge.job("o6", 5))
    actorq_recorder.assert_enqueued(task="shop.charge", args=["o6", 5], queue="urgent")


def test_code_that_makes_its_own_client_records_too(actorq_clients: TaskRecorder) -> None:
    # no file is created or written: every actorq.Client of this test is the recorder
    assert shop.nightly_report("sqlite:////nonexistent/dir/journal.db") == "report charge paid-nightly"
    actorq_clients.assert_enqueued(task="shop.charge", args=["nightly", 1])


def test_an_async_client_of_the_code_records_too(actorq_clients: TaskRecorder) -> None:
    assert asyncio.run(shop.express_checkout("sqlite:////nonexistent/dir/journal.db", "o7", 300)) == "paid-o7"
    actorq_clients.assert_enqueued(task="shop.charge", args=["o7", 300])
    assert shop.LEDGER == {"o7": 300}
