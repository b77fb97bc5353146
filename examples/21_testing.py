"""Testing code that enqueues jobs: record them, assert on them, run them when the test says.

`actorq.testing.TaskRecorder` has the producer methods of `actorq.Client` (and a queue
ref's `tell`) on an in-memory journal that keeps the real journal's rules. Nothing starts:
no node, no worker, no file. In a pytest suite the same comes as fixtures
(`actorq_recorder`, `actorq_inline`, `actorq_clock`): see examples/testing_demo/ and
docs/testing.md.

Run from the repository root:  python examples/21_testing.py
"""

import actorq
from actorq.testing import ManualClock, TaskRecorder

tasks = actorq.TaskRegistry()
sent: list[str] = []


@tasks.task("emails.welcome", queue="emails", max_attempts=2)
def welcome(user: str, *, lang: str = "en") -> str:
    if user == "bounce":
        raise OSError("mailbox unavailable")
    sent.append(f"welcome {user} ({lang})")
    return "sent"


def sign_up(jobs, user: str) -> None:
    """The code under test: takes its producer (a Client in production)."""
    jobs.enqueue(welcome.job(user, lang="fr"))
    jobs.enqueue(actorq.Job("emails.welcome", [user], delay=3600))  # a reminder, an hour later


clock = ManualClock(1_800_000_000.0)
recorder = TaskRecorder(tasks, clock=clock)
sign_up(recorder, "ann")
[first] = recorder.assert_enqueued(task="emails.welcome", args=["ann"], kwargs={"lang": "fr"})
print("enqueued:", [(job.task, job.args, job.kwargs, job.state.value) for job in recorder.enqueued()])
print("sent before drain:", sent)
print("drained:", recorder.drain().ran, "->", sent, recorder.result(first.id))
clock.advance(3600)
print("an hour later:", recorder.drain().ran, "->", sent[-1])

recorder.enqueue(welcome.job("bounce"))
outcome = recorder.drain(with_scheduled=True, raise_errors=False)  # retries run without waiting
[bounced] = recorder.enqueued(state=actorq.JobState.DEAD)
print("bounce:", len(outcome.failed), "attempts,", bounced.state.value, recorder.get(bounced.id).errors[-1])

inline = TaskRecorder(tasks, inline=True)  # each enqueue runs its jobs before it returns
inline.enqueue(welcome.job("bob"))
print("inline:", sent[-1])

# Output:
# enqueued: [('emails.welcome', ['ann'], {'lang': 'fr'}, 'ready'), ('emails.welcome', ['ann'], {}, 'scheduled')]
# sent before drain: []
# drained: 1 -> ['welcome ann (fr)'] sent
# an hour later: 1 -> welcome ann (en)
# bounce: 2 attempts, dead OSError: mailbox unavailable
# inline: welcome bob (en)
