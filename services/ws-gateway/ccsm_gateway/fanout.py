"""Writing one serialised frame to many sockets at once, on more than one core.

A broadcast to N idle desktop sockets is N `write(2)` calls of the same bytes. Almost all of a call's cost is in
the kernel (on loopback it also runs the receiver's TCP input: bench/ws_fanout.py, `perf record` showed 76 % of
the gateway's CPU in the kernel during a 15,000-socket broadcast), and CPython releases the GIL around `os.write`,
so helper threads can write a share of the sockets while the event-loop thread writes its own: with two cores the
broadcast finishes sooner (bench/ws_fanout.py measures it against a bare `websockets` server).

The rules that make writing to a socket's file descriptor behind its transport safe (`Hub.broadcast` keeps them):
- only sockets whose transport has nothing buffered are written, so the bytes cannot overtake earlier ones;
- the event-loop thread waits for every helper before it returns, so no transport can close (and no descriptor
  be reused) while a helper holds its number;
- the descriptors are non-blocking: a full socket buffer answers EAGAIN at once and a helper never waits on a
  peer. What a write could not finish (EAGAIN, a partial write, an error such as EPIPE) is returned, and the
  caller hands the rest to the transport on the loop thread, which queues it or discovers the error the way it
  would have for its own write.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Below this many sockets a helper's hand-off (waking a thread, ~50 µs) costs more than it saves.
SPLIT_AT = 512
# Sockets per unit of work: helpers and the loop thread take chunks from one iterator, so a helper that the
# scheduler delays simply takes fewer chunks instead of holding the broadcast up.
CHUNK = 256

Short = tuple[int, int]  # (index into the descriptors, bytes of the frame written: 0 .. len-1)


def default_helpers() -> int:
    """One helper thread when the process may use two or more cores, else none. More than one helper did not pay
    on this machine's 2 cores (the threads then contend for the GIL between syscalls)."""
    return 1 if usable_cores() >= 2 else 0


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may run on (its affinity), capped by its cgroup's CPU quota when it has one: a
    container given 0.5 vCPU (the gateway's ECS task) may see every core of its host and still get only half of
    one, and a helper thread there buys nothing."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs' worth of time per period the cgroup allows, or None when unlimited or unknown. cgroup v2 `cpu.max`
    holds "$MAX $PERIOD" ("max" when unlimited; Documentation/admin-guide/cgroup-v2.rst); cgroup v1 has
    `cpu.cfs_quota_us` (-1 when unlimited) and `cpu.cfs_period_us`."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def write_chunks(fds: Sequence[int], chunks: Iterator[range], data: bytes) -> list[Short]:
    """Write `data` to `fds[i]` for every index of every chunk taken from `chunks` (shared between threads:
    `next` on a list iterator is atomic under the GIL); the writes that did not complete."""
    short: list[Short] = []
    size = len(data)
    write = os.write
    for chunk in chunks:
        for i in chunk:
            try:
                written = write(fds[i], data)
            except OSError:  # EAGAIN, EPIPE, ECONNRESET, EBADF...: the transport's own write settles it
                written = 0
            if written != size:
                short.append((i, written))
    return short


class FanOut:
    """`write(fds, data)` on the calling thread plus `helpers` threads; see the module docstring."""

    def __init__(self, helpers: int | None = None, split_at: int = SPLIT_AT, chunk: int = CHUNK) -> None:
        self.helpers = default_helpers() if helpers is None else helpers
        self.split_at = split_at
        self.chunk = chunk
        self._pool = ThreadPoolExecutor(self.helpers, thread_name_prefix="ws-fanout") if self.helpers else None

    def write(self, fds: Sequence[int], data: bytes) -> list[Short]:
        """Write `data` to every descriptor; returns the writes that did not complete, in no particular order."""
        count = len(fds)
        chunks = iter([range(start, min(start + self.chunk, count)) for start in range(0, count, self.chunk)])
        if self._pool is None or count < self.split_at:
            return write_chunks(fds, chunks, data)
        futures = [self._pool.submit(write_chunks, fds, chunks, data) for _ in range(self.helpers)]
        short = write_chunks(fds, chunks, data)
        for future in futures:
            short.extend(future.result())  # bounded: non-blocking writes only (see the module docstring)
        return short

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
