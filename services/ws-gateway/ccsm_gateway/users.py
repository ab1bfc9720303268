"""The database's word on the users that hold sockets here (issue 12 items 4 and 5).

A revocation message on Redis closes a user's sockets at once, but a user deactivated directly in the database,
or whose `users.tokens_revoked_at` moved while Redis was away (it has no persistence), sends no message. So:

- every `WS_USER_CHECK_MS` (15 s) one query reads `is_active` and `tokens_revoked_at` of every user that has a
  socket in this process (`Hub.by_user`; in chunks of `CHUNK` ids, so one query for any realistic office), and
  `Hub.apply_user_records` closes with 4401 the sockets of inactive or deleted users and those whose token
  predates the user's revocation: a socket outlives such a change by at most the interval plus the query, the
  API guard's 30 s;
- an upgrade asks the same question (`lookup`) before it accepts, so a token issued before `tokens_revoked_at`,
  or an inactive user's, cannot open a socket even on a process that started after Redis forgot the revocation.
  Lookups made in the same turn of the event loop share one query, and answers are kept for one interval, so a
  reconnect storm of every desktop costs a few queries, not one per socket.

When MySQL is unreachable the gateway fails open, on purpose: its sockets stay as they are (closing every desktop
because the database blinked would turn a database outage into a resync storm on the api), upgrades are decided
by the token and the Redis revocation record alone, and one warning says so (and one line when it is back).
After a failure, upgrades stop asking for one interval, so none of them waits for the connect time-out. /ready
stays Redis-only: the gateway still does its job without MySQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ccsm_core.db import Database

log = logging.getLogger("ccsm.gateway")

CHUNK = 1000  # ids per query
QUERY_TIMEOUT_S = 2.0  # one read; past it the check counts as failed (fail open)
KNOWN_LIMIT = 50_000  # users whose answer is kept; only a flood of distinct users reaches it
USERS_SQL = "SELECT id, is_active, tokens_revoked_at FROM users WHERE id IN ({marks})"


@dataclass(frozen=True, slots=True)
class UserRecord:
    active: bool
    revoked_at: float | None  # `tokens_revoked_at` in epoch seconds; None: never revoked


class Unknown:
    """The database could not answer: decide without it (fail open)."""


UNKNOWN = Unknown()
Lookup = UserRecord | None | Unknown  # None: no such user (deleted)


def epoch_s(value: Any) -> float | None:
    """A DATETIME read in the session's UTC (`time_zone = '+00:00'`) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC).timestamp() if value.tzinfo is None else value.timestamp()
    return None


async def read_users(db: Database, ids: Iterable[int]) -> dict[int, UserRecord]:
    """`is_active` and `tokens_revoked_at` of `ids`; a user that no longer exists is absent from the answer."""
    wanted = sorted(set(ids))
    out: dict[int, UserRecord] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        rows = await db.fetch_all(USERS_SQL.format(marks=", ".join(["%s"] * len(chunk))), chunk)
        for row in rows:
            out[int(row["id"])] = UserRecord(bool(row["is_active"]), epoch_s(row["tokens_revoked_at"]))
    return out


Reader = Callable[[Iterable[int]], Awaitable[dict[int, UserRecord]]]


class UserChecks:
    """The periodic check of every connected user and the upgrade-time `lookup`; see the module docstring."""

    def __init__(
        self,
        read: Reader,
        connected: Callable[[], Iterable[int]],
        apply: Callable[[Iterable[int], dict[int, UserRecord]], int],
        interval_s: float,
    ) -> None:
        self.read = read
        self.connected = connected
        self.apply = apply
        self.interval_s = interval_s
        self.checks = 0  # completed periodic checks
        self.failing = False
        self._known: dict[int, tuple[float, UserRecord | None]] = {}
        self._pending: dict[int, asyncio.Future[Lookup]] = {}
        self._flush: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._skip_until = 0.0  # after a failure, upgrades do not ask until then

    # --- the periodic check -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        for task in (self._task, self._flush):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for future in self._pending.values():
            if not future.done():
                future.set_result(UNKNOWN)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check_now()

    async def check_now(self) -> int:
        """Read every connected user once and apply the answer; how many sockets it closed (0 on failure)."""
        users = list(self.connected())
        if not users:
            self.checks += 1
            return 0
        records = await self._read(users)
        self.checks += 1
        if records is None:
            return 0
        return self.apply(users, records)

    async def _read(self, users: list[int]) -> dict[int, UserRecord] | None:
        try:
            records = await asyncio.wait_for(self.read(users), QUERY_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._skip_until = time.monotonic() + self.interval_s
            if not self.failing:
                self.failing = True
                log.warning(
                    "user check failed: MySQL unreachable; sockets are kept and upgrades decided without it",
                    extra={"error": type(exc).__name__},
                )
            return None
        if self.failing:
            self.failing = False
            log.info("user check works again")
        expires = time.monotonic() + self.interval_s
        if len(self._known) + len(users) > KNOWN_LIMIT:
            self._known.clear()
        for user in users:
            self._known[user] = (expires, records.get(user))
        return records

    # --- at the upgrade ---------------------------------------------------------------------------------------

    def lookup(self, user_id: int) -> asyncio.Future[Lookup]:
        """The user's record (None: deleted), or UNKNOWN when the database cannot say. Never raises."""
        loop = asyncio.get_running_loop()
        known = self._known.get(user_id)
        if known is not None and known[0] > time.monotonic():
            done: asyncio.Future[Lookup] = loop.create_future()
            done.set_result(known[1])
            return done
        future = self._pending.get(user_id)
        if future is None:
            future = self._pending[user_id] = loop.create_future()
            if time.monotonic() < self._skip_until:
                del self._pending[user_id]
                future.set_result(UNKNOWN)
                return future
        if self._flush is None:
            self._flush = loop.create_task(self._flush_pending())
        return future

    async def _flush_pending(self) -> None:
        """One query for every lookup made since the last one (the upgrades of this turn of the loop)."""
        try:
            await asyncio.sleep(0)
        finally:
            self._flush = None
        batch, self._pending = self._pending, {}
        if not batch:
            return
        records: dict[int, UserRecord] | None = None
        try:
            records = await self._read(list(batch))
        finally:  # also when cancelled at shutdown: nobody is left waiting
            for user, future in batch.items():
                if not future.done():
                    future.set_result(UNKNOWN if records is None else records.get(user))
