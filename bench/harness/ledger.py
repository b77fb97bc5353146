"""The shared ledger every benchmarked system's task writes to: one slot per job.

Standard library only: it is imported by the harness and, inside each peer's
own virtualenv, by that peer's adapter and by the task the peer runs.

The ledger is a file in shared memory (``/dev/shm`` where it exists) that
every process maps. Job ``i`` of a run has slot ``i``:

- ``counts[i]``: how many times the job ran (an unsigned byte that saturates
  at 255). 0 after a run means the job was lost, more than 1 that it ran twice.
- ``enqueued_ns[i]``: ``time.monotonic_ns()`` just before the producer's call
  that enqueued it (for latency; 0 when not recorded).
- ``done_ns[i]``: ``time.monotonic_ns()`` when the task ran (the last run).

``CLOCK_MONOTONIC`` is one clock for every process of a Linux machine, so
times written by different processes compare. A job id outside ``0..n-1``
does not write a slot; it is counted in the header as a stray.

Two runs of one job at the very same moment can both read the same count and
write the same increment, so a duplicate that ran concurrently with its
original may be missed. Duplicates come from redelivery after a crash or a
timeout, which is not concurrent with the first run in the workloads here.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"BENCHLG1"
_HEADER = struct.Struct("<8sQQ")  # magic, slots, strays
_HEADER_SIZE = 64
_I64 = struct.Struct("<q")
ENV = "BENCH_LEDGER"  # the variable that names the ledger file for the processes of a run


def default_dir() -> Path:
    """Where ledgers live: shared memory when the machine has it."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")


@dataclass(frozen=True)
class Summary:
    """What a ledger says about a run of ``slots`` jobs."""

    slots: int
    done: int  # jobs that ran at least once
    lost: int  # jobs that never ran
    duplicated: int  # jobs that ran more than once
    extra_runs: int  # runs beyond the first, summed over the duplicated jobs
    strays: int  # runs recorded for a job id outside the run
    first_done_ns: int  # 0 when nothing ran
    last_done_ns: int


class Ledger:
    """One run's ledger, mapped into this process."""

    def __init__(self, path: Path, slots: int, fd: int, mem: mmap.mmap) -> None:
        self.path = path
        self.slots = slots
        self._fd = fd
        self._mem = mem
        self._counts = _HEADER_SIZE
        self._enqueued = _HEADER_SIZE + _pad8(slots)
        self._done = self._enqueued + 8 * slots

    @classmethod
    def create(cls, path: Path | str, slots: int) -> "Ledger":
        """A new zeroed ledger of ``slots`` jobs at ``path`` (replaced if it exists)."""
        if not 1 <= slots <= 100_000_000:
            raise ValueError(f"a ledger holds 1 to 100,000,000 jobs, not {slots}")
        path = Path(path)
        size = _HEADER_SIZE + _pad8(slots) + 16 * slots
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            mem = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        _HEADER.pack_into(mem, 0, MAGIC, slots, 0)
        return cls(path, slots, fd, mem)

    @classmethod
    def open(cls, path: Path | str) -> "Ledger":
        """Map an existing ledger (made by `create`)."""
        path = Path(path)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER_SIZE:
                raise ValueError(f"{path}: not a ledger (too short)")
            mem = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        magic, slots, _ = _HEADER.unpack_from(mem, 0)
        if magic != MAGIC or size != _HEADER_SIZE + _pad8(slots) + 16 * slots:
            mem.close()
            os.close(fd)
            raise ValueError(f"{path}: not a ledger")
        return cls(path, slots, fd, mem)

    def close(self) -> None:
        """Unmap (the file stays)."""
        try:
            self._mem.close()
        finally:
            os.close(self._fd)

    # -- written by the task and the producer ------------------------------------
    def record(self, i: int) -> None:
        """Job ``i`` ran now."""
        if not (isinstance(i, int) and 0 <= i < self.slots):
            _, slots, strays = _HEADER.unpack_from(self._mem, 0)
            _HEADER.pack_into(self._mem, 0, MAGIC, slots, strays + 1)
            return
        mem = self._mem
        at = self._counts + i
        count = mem[at]
        if count < 255:
            mem[at] = count + 1
        _I64.pack_into(mem, self._done + 8 * i, time.monotonic_ns())

    def mark_enqueued(self, i: int, ns: int | None = None) -> None:
        """Job ``i`` is about to be enqueued (now, or at ``ns``)."""
        _I64.pack_into(self._mem, self._enqueued + 8 * i, time.monotonic_ns() if ns is None else ns)

    # -- read by the harness --------------------------------------------------------
    def count(self, i: int) -> int:
        """How many times job ``i`` ran."""
        return self._mem[self._counts + i]

    def done_count(self, first: int = 0, stop: int | None = None) -> int:
        """How many jobs of ``first..stop-1`` ran at least once."""
        stop = self.slots if stop is None else stop
        counts = self._mem[self._counts + first:self._counts + stop]
        return len(counts) - counts.count(0)

    def summary(self, stop: int | None = None) -> Summary:
        """Lost, duplicated and the first and last completion over jobs ``0..stop-1``."""
        stop = self.slots if stop is None else stop
        counts = self._mem[self._counts:self._counts + stop]
        lost = counts.count(0)
        duplicated = extra = 0
        for value in range(2, 256):
            times = counts.count(value)
            duplicated += times
            extra += times * (value - 1)
        done = self.done_times(stop)
        _, _, strays = _HEADER.unpack_from(self._mem, 0)
        return Summary(stop, stop - lost, lost, duplicated, extra, strays,
                       min(done) if done else 0, max(done) if done else 0)

    def done_times(self, stop: int | None = None) -> list[int]:
        """The completion times of the jobs of ``0..stop-1`` that ran."""
        stop = self.slots if stop is None else stop
        values = struct.unpack_from(f"<{stop}q", self._mem, self._done)
        return [v for v in values if v]

    def enqueued_times(self, stop: int | None = None) -> list[int]:
        """The enqueue times written for jobs ``0..stop-1`` (0 where none was written)."""
        stop = self.slots if stop is None else stop
        return list(struct.unpack_from(f"<{stop}q", self._mem, self._enqueued))

    def latencies_ns(self, stop: int | None = None) -> list[int]:
        """Enqueue-to-run times of the jobs that have both times."""
        stop = self.slots if stop is None else stop
        enqueued = struct.unpack_from(f"<{stop}q", self._mem, self._enqueued)
        done = struct.unpack_from(f"<{stop}q", self._mem, self._done)
        return [d - e for e, d in zip(enqueued, done) if e and d]


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


_current: Ledger | None = None


def record_job(i: int) -> None:
    """The benchmark task's body: record job ``i`` in the ledger named by ``$BENCH_LEDGER``.

    Opens the ledger once per process, on first use.
    """
    global _current
    if _current is None:
        _current = Ledger.open(os.environ[ENV])
    _current.record(i)
