"""`db-changed`: coalesced after commits, published once per window on a Redis channel.

Like the old bus (contract-core §8.6) this is a fixed-window throttle: the first change starts a 150 ms timer,
later changes in the window only replace the reason (the last one wins), and one event
`{"type":"db-changed","reason":...,"ts":<ms>}` goes out when it fires. Unlike the old bus it crosses processes:
every gateway task subscribes to the channel.

If Redis is down the write that caused the change has still succeeded; the event stays pending and is retried
with exponential back-off (the drop is logged), so the first publish after Redis returns tells every desktop to
resync. Nothing here ever blocks or fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson

from ccsm_core.keyspace import Keyspace

log = logging.getLogger("ccsm.events")

WINDOW_S = 0.150  # contract-core §8.6: the old bus's 150 ms window
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0


def db_changed_frame(reason: str, ts_ms: int | None = None) -> bytes:
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    return orjson.dumps({"type": "db-changed", "reason": reason, "ts": ts})


class ChangePublisher:
    def __init__(self, keyspace: Keyspace, window_s: float = WINDOW_S) -> None:
        self.keyspace = keyspace
        self.window_s = window_s
        self._reason: str | None = None
        self._marks = 0  # bumped by every mark: a change during a publish is seen even with the same reason
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.published = 0
        self.dropped = 0

    def mark(self, reason: str) -> None:
        """Called by the commit hook; cheap and synchronous."""
        self._reason = reason
        self._marks += 1
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        backoff = BACKOFF_START_S
        try:
            await asyncio.sleep(self.window_s)
            while self._reason is not None:
                reason = self._reason
                marks = self._marks
                frame = db_changed_frame(reason)
                try:
                    await self.keyspace.client.publish(self.keyspace.db_changed_channel, frame)
                except Exception as exc:
                    self.dropped += 1
                    log.warning(
                        "db-changed publish failed; will retry",
                        extra={"reason": reason, "error": type(exc).__name__, "retryInS": backoff},
                    )
                    if self._closed:
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                self.published += 1
                if backoff > BACKOFF_START_S:
                    log.info("db-changed published after Redis returned", extra={"reason": reason})
                    backoff = BACKOFF_START_S
                if self._marks == marks:
                    self._reason = None
                else:
                    # changed again while publishing: a new window for it
                    await asyncio.sleep(self.window_s)
        finally:
            self._task = None

    async def close(self, flush_timeout_s: float = 1.0) -> None:
        """Flush a pending event (bounded), then stop."""
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), flush_timeout_s)
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._reason is not None:
            log.warning("db-changed event dropped at shutdown", extra={"reason": self._reason})
