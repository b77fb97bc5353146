"""Client-made, time-ordered job ids.

An id is 32 lowercase hex digits: 48 bits of Unix time in milliseconds, a
16-bit sequence number within that millisecond, then 64 random bits drawn once
per process. Ids made in one process sort in the order they were made; ids made
in different processes sort by millisecond. Because the producer makes the id,
`tell` needs no round trip, and a re-sent enqueue carries the same id, which the
journal turns into a no-op.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id", "id_time"]


class _IdState:
    __slots__ = ("pid", "ms", "seq", "tail")

    def __init__(self) -> None:
        self.pid = -1
        self.ms = 0
        self.seq = 0
        self.tail = ""


_lock = threading.Lock()
_state = _IdState()


def new_id() -> str:
    """Return a new time-ordered, globally unique id (32 hex digits). Thread-safe."""
    ms = time.time_ns() // 1_000_000
    with _lock:
        st = _state
        if st.pid != os.getpid():  # a forked child must not reuse its parent's random tail
            st.pid = os.getpid()
            st.tail = os.urandom(8).hex()
            st.seq = 0
        if ms <= st.ms:
            ms = st.ms
            st.seq += 1
            if st.seq > 0xFFFF:  # 65,536 ids in one millisecond: borrow the next one
                ms += 1
                st.seq = 0
        else:
            st.seq = 0
        st.ms = ms
        return f"{ms:012x}{st.seq:04x}{st.tail}"


def id_time(job_id: str) -> float:
    """Return the Unix time (seconds) at which `job_id` was made."""
    return int(job_id[:12], 16) / 1000.0
