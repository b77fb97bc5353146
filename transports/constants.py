"""Wire constants: the envelope's version and bounds. Stable across releases.

The transport moves envelopes ``[version, kind, body]`` and knows no message of
its own: each protocol names its kinds beside its receivers (the job runtime's
in `actorq.jobs.wire`, the remote actors' in `actorq.supervisors.remote`, the
node's control requests in `actorq.node.control`) and passes them to `decode`.
"""

from __future__ import annotations

WIRE_VERSION = 1
MAX_KIND_LEN = 64  # a kind is a short tag; a longer string is refused before any lookup
DEFAULT_MAX_FRAME_BYTES = 16 << 20  # the default bound of a frame and of any length in it (decode, sockets)
