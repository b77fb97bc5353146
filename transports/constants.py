"""Wire constants: the envelope's version and bounds, and the job protocol's kinds. Stable across releases.

Each protocol names its own kinds beside its receivers: the remote actors'
in `actorq.supervisors.remote`, the node's control requests in
`actorq.node.control`. The job protocol's kinds below are still here; they
move to the job runtime, which will pass its own set to `decode`.
"""

from __future__ import annotations

WIRE_VERSION = 1
MAX_KIND_LEN = 64  # a kind is a short tag; a longer string is refused before any lookup

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

KINDS = frozenset({HELLO, ACK, BYE, HEARTBEAT, JOBS, STOP, WHO, RESET})  # the job protocol's kinds

# Kept only while actorq.node.node and actorq.node.cli still read it here: the
# control protocol's kind is actorq.node.control.TREE; not a job kind, not in KINDS.
TREE = "tree"

# Room kept in every frame for the envelope and per-job fields around the payloads.
FRAME_OVERHEAD = 64 * 1024
DEFAULT_MAX_FRAME_BYTES = 16 << 20  # the default bound of a frame and of any length in it (decode, sockets)


def payload_budget(max_frame_bytes: int) -> int:
    """The most payload bytes one frame of `max_frame_bytes` carries (one job's, or a JOBS batch's)."""
    return max_frame_bytes - FRAME_OVERHEAD
