"""Wire constants: envelope version and message kinds. Stable across releases."""

from __future__ import annotations

WIRE_VERSION = 1

# worker -> dispatcher
# HELLO: {"owner": str, "credits": int, "queues": [str], "pid": int,
#         "held": [[job_id, lease_id], ...] (only when re-announcing, after WHO or RESET),
#         "reset": true (only after RESET)}
HELLO = "hello"
ACK = "ack"  # [[job_id, lease_id, outcome, error | None, retry_in | None], ...]
BYE = "bye"  # None
HEARTBEAT = "hb"  # None: "I am alive" (sent every heartbeat interval)
# dispatcher -> worker
JOBS = "jobs"  # [[job_id, lease_id, task, payload, attempt, max_attempts, queue], ...]
STOP = "stop"  # None
WHO = "who"  # None: "I do not know you" (a restarted dispatcher): say HELLO again with what you hold
RESET = "reset"  # None: "your leases were taken away" (you were silent too long): drop every job, say HELLO

# a supervisor's hub <-> an actor running in its own process (actorq.supervisors.remote)
AHELLO = "ahello"  # child -> hub, None: the actor has started
ATELL = "atell"  # hub -> child: the message
AASK = "aask"  # hub -> child: [number, message]
AREPLY = "areply"  # child -> hub: [number, ok, reply or "Type: message"]

# control requests to a node (``actorq tree``), answered with the same kind
TREE = "tree"  # request: None; reply: the live supervision tree as nested maps

KINDS = frozenset({HELLO, ACK, BYE, HEARTBEAT, JOBS, STOP, WHO, RESET, TREE, AHELLO, ATELL, AASK, AREPLY})

# Room kept in every frame for the envelope and per-job fields around the payloads.
FRAME_OVERHEAD = 64 * 1024
DEFAULT_MAX_FRAME_BYTES = 16 << 20


def payload_budget(max_frame_bytes: int) -> int:
    """The most payload bytes one frame of `max_frame_bytes` carries (one job's, or a JOBS batch's)."""
    return max_frame_bytes - FRAME_OVERHEAD
