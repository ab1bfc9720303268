"""One user's share of the database pool (issue 12 item 9).

25 concurrent `POST /api/items {"count": 1000}` from one employee used to take the whole pool: the project row
lock serialises them, and every request waiting for that lock held a pooled connection while it waited, so
other users' requests timed out acquiring one (503). Now the requests of one authenticated user hold at most
`DB_USER_CONNECTIONS` pooled connections at once (never the whole pool: at most `DB_POOL_SIZE - 1`). More of
them wait here, in the process, without a connection, in arrival order, for at most `DB_ACQUIRE_TIMEOUT_MS`;
at most `DB_USER_QUEUE` of them wait at once. Past either bound the request is answered 429 with
`Retry-After` at once, before it has done anything.

Why this and not the alternatives: a share of the pool kept for "others" without a per-user bound still lets one
user take every other slot; a global queue lets one user's burst delay everyone behind it. A per-user bound keeps
the pool for everyone else whatever one user does, costs a dictionary entry per user with requests in flight,
and never refuses a user's ordinary bursts (a page load of a few parallel requests waits milliseconds).

Who the user is comes from the request guard (`acting_user`, set once the token is verified and the user is
active); work done before that (the guard's own user lookup, logins) is not counted. A connection taken while
the same task already holds one (a nested use) does not count twice, so a request can never wait for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ccsm_core.errors import ApiError

TOO_MANY = "Too many concurrent requests, please retry later"
RETRY_AFTER_S = 1

# The authenticated user on whose behalf the current task works (None: not known, not counted).
acting_user: contextvars.ContextVar[int | None] = contextvars.ContextVar("ccsm_acting_user", default=None)
_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("ccsm_holding_share", default=False)


class ShareExceeded(ApiError):
    def __init__(self) -> None:
        super().__init__(429, TOO_MANY, headers={"Retry-After": str(RETRY_AFTER_S)})


@dataclass
class _Share:
    active: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class PoolShare:
    """At most `per_user` connections per user at once; up to `queue` more of the user's requests wait at most
    `wait_s` for one of them. A released slot is handed to the user's oldest waiter."""

    def __init__(self, per_user: int, queue: int, wait_s: float) -> None:
        self.per_user = per_user
        self.queue = queue
        self.wait_s = wait_s
        self._users: dict[int, _Share] = {}

    def in_use(self, user_id: int) -> tuple[int, int]:
        """(connections held, requests waiting) for a user: for tests and logs."""
        share = self._users.get(user_id)
        return (share.active, len(share.waiting)) if share else (0, 0)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        user = acting_user.get()
        if user is None or self.per_user <= 0 or _holding.get():
            yield
            return
        share = self._users.setdefault(user, _Share())
        if share.active < self.per_user and not share.waiting:
            share.active += 1
        else:
            await self._wait(user, share)
        token = _holding.set(True)
        try:
            yield
        finally:
            _holding.reset(token)
            self._release(user, share)

    async def _wait(self, user: int, share: _Share) -> None:
        if len(share.waiting) >= self.queue:
            raise ShareExceeded()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        share.waiting.append(turn)
        try:
            async with asyncio.timeout(self.wait_s):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self._release(user, share)  # handed a slot as we gave up: pass it on
            else:
                turn.cancel()
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    share.waiting.remove(turn)
                self._forget_if_idle(user, share)
            if isinstance(exc, TimeoutError):
                raise ShareExceeded() from None
            raise

    def _release(self, user: int, share: _Share) -> None:
        while share.waiting:
            turn = share.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes to the oldest waiter; `active` is unchanged
                return
        share.active -= 1
        self._forget_if_idle(user, share)

    def _forget_if_idle(self, user: int, share: _Share) -> None:
        if not share.active and not share.waiting and self._users.get(user) is share:
            del self._users[user]


def pool_share(pool_size: int, per_user: int, queue: int, wait_s: float) -> PoolShare:
    """The gate for a pool of `pool_size`: one user never holds all of it (when it has more than one
    connection)."""
    if per_user > 0:
        per_user = min(per_user, max(1, pool_size - 1))
    return PoolShare(per_user, queue, wait_s)
