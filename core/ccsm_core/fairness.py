"""One user's share of the database pool (issue 12 item 9).

25 concurrent `POST /api/items {"count": 1000}` from one employee used to take the whole pool: the project row
lock serialises them, and every request waiting for that lock held a pooled connection while it waited, so
other users' requests timed out acquiring one (503). Now the requests of one authenticated user hold at most
`DB_USER_CONNECTIONS` pooled connections at once (never the whole pool: at most `DB_POOL_SIZE - 1`), unless the
pool is idle enough to lend them more: a request past its user's share still goes ahead while the pool has more
than `DB_USER_CONNECTIONS` connections nobody holds or waits for, so at least that many always stay for everyone
else (issue 15: one user's burst no longer runs three at a time on an idle pool; the desktop's write pair cost
~12 % more CPU per pair with three in flight than with seven). A lent connection goes back to the pool as soon
as lending it again would eat into that reserve. More requests wait here, in the process, without a
connection, in arrival order, for at most `DB_ACQUIRE_TIMEOUT_MS`;
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
from collections.abc import AsyncIterator, Callable
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
    """At most `per_user` connections per user at once, more while `idle()` (the pool's connections free or not
    yet opened, 0 while anyone waits for one) is above `per_user`; up to `queue` more of the user's requests wait
    at most `wait_s` for one of them. A released slot is handed to the user's oldest waiter."""

    def __init__(self, per_user: int, queue: int, wait_s: float, idle: Callable[[], int] | None = None) -> None:
        self.per_user = per_user
        self.queue = queue
        self.wait_s = wait_s
        self.idle = idle
        self._users: dict[int, _Share] = {}

    def _may_lend(self) -> bool:
        """One more connection than the user's share, leaving at least `per_user` idle for everyone else."""
        return self.idle is not None and self.idle() > self.per_user

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
        if not share.waiting and (share.active < self.per_user or self._may_lend()):
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
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        share.waiting.append(turn)
        # A bare timer on the future rather than `asyncio.timeout()`: every waiting request paid for a Timeout
        # object, its rescheduling and the task's cancel/uncancel bookkeeping (issue 15, the desktop's write pair).
        timer = loop.call_later(self.wait_s, _expire, turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release(user, share)  # handed a slot as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    share.waiting.remove(turn)
                self._forget_if_idle(user, share)
            raise
        finally:
            timer.cancel()

    def _release(self, user: int, share: _Share) -> None:
        # Called once the connection is back in the pool. A slot within the share passes to the oldest waiter; a
        # lent one only while the pool could lend it again.
        while share.waiting and (share.active <= self.per_user or self._may_lend()):
            turn = share.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes to the oldest waiter; `active` is unchanged
                return
        share.active -= 1
        self._forget_if_idle(user, share)

    def _forget_if_idle(self, user: int, share: _Share) -> None:
        if not share.active and not share.waiting and self._users.get(user) is share:
            del self._users[user]


def _expire(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_exception(ShareExceeded())


def pool_share(
    pool_size: int, per_user: int, queue: int, wait_s: float, idle: Callable[[], int] | None = None
) -> PoolShare:
    """The gate for a pool of `pool_size` whose idle connections `idle()` counts: one user never holds all of it
    (when it has more than one connection)."""
    if per_user > 0:
        per_user = min(per_user, max(1, pool_size - 1))
    return PoolShare(per_user, queue, wait_s, idle)
