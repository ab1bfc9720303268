"""Giving memory back after many sockets close (issue 12 item 5: 5,000 sockets took the gateway from 67 to 153 MiB,
and closing them did not bring it down).

What stayed was free memory the allocators kept, not live objects (opening 5,000 more reused it without growth):
Python's small-object allocator returns an arena only when all of it is free, and glibc's malloc returns heap
pages only at the top of the heap (M_TRIM_THRESHOLD) unless `malloc_trim` is called, which since glibc 2.8 also
releases free pages in the middle of every arena (madvise). The transport keeps little per socket, so there is
little to fragment; this module calls `malloc_trim(0)` once a burst of closes is over: when at least
`TRIM_AFTER_CLOSES` sockets closed and none closed for `QUIET_S`. It runs on a worker thread (ctypes releases the
GIL; glibc locks one arena at a time), at most once per burst. Where libc has no `malloc_trim` (musl, macOS)
nothing happens.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("ccsm.gateway")

TRIM_AFTER_CLOSES = 500  # fewer closes free too little to be worth a trim
QUIET_S = 2.0  # the burst is over when nothing closed for this long


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


MALLOC_TRIM = _malloc_trim()


class Trimmer:
    """Counts closed sockets; `tick()` (once a second, from the heartbeat) trims after a burst of them."""

    def __init__(
        self,
        after_closes: int = TRIM_AFTER_CLOSES,
        quiet_s: float = QUIET_S,
        trim: Callable[[int], int] | None = MALLOC_TRIM,
    ) -> None:
        self.trim = trim
        self.after_closes = after_closes
        self.quiet_s = quiet_s
        self.closed = 0  # since the last trim
        self.last_close = 0.0
        self.trims = 0
        self._running: asyncio.Future[None] | None = None

    def note_closed(self) -> None:
        self.closed += 1
        self.last_close = time.monotonic()

    def tick(self) -> None:
        if self.closed < self.after_closes or time.monotonic() - self.last_close < self.quiet_s:
            return
        if self.trim is None or self._running is not None:
            return
        self.closed = 0
        gc.collect()  # what only the cycle collector frees (parsers' generator frames) goes first
        self._running = asyncio.get_running_loop().run_in_executor(None, self._trim)
        self._running.add_done_callback(self._done)

    def _trim(self) -> None:
        assert self.trim is not None
        self.trim(0)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._running = None
        self.trims += 1
        if future.exception() is not None:
            log.warning("malloc_trim failed", extra={"error": type(future.exception()).__name__})
