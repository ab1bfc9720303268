"""One user's share of the connection pool (issue 12 item 9): a user's requests hold at most DB_USER_CONNECTIONS
pooled connections at once; more of them wait in the process, without a connection, for at most
DB_ACQUIRE_TIMEOUT_MS (at most DB_USER_QUEUE of them); past either bound the answer is 429 with Retry-After.
Other users keep the rest of the pool."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ccsm_core.fairness import PoolShare, ShareExceeded, acting_user, pool_share
from ccsm_core.settings import Settings
from tests.api.transcript import query, token
from tests.harness import running

# The reproduction, 25 concurrent POST /api/items {"count": 1000} from one employee, kept up for a while:
# each of the 25 sends its next request as soon as it has an answer (and ignores Retry-After), so lock waiters
# keep arriving instead of draining after the first wave.
HEAVY_WORKERS = 25
HEAVY_SECONDS = 12.0
OTHER_USERS = 8  # other users, each sending a request every OTHER_PACE_S (about 160 requests/s in all)
OTHER_PACE_S = 0.05


# --- the gate itself ---------------------------------------------------------------------------------------------


def as_user(user: int | None, work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run `work` in a task of its own acting for `user` (as a request's task does once the guard knows it)."""
    context = contextvars.copy_context()
    context.run(acting_user.set, user)
    return asyncio.get_running_loop().create_task(work(), context=context)


class Holder:
    """A request holding its share until told to let go."""

    def __init__(self, share: PoolShare, user: int | None) -> None:
        self.share = share
        self.inside = asyncio.Event()
        self.leave = asyncio.Event()
        self.task = as_user(user, self.run)

    async def run(self) -> None:
        async with self.share.admit():
            self.inside.set()
            await self.leave.wait()


def test_a_user_holds_at_most_their_share_and_the_next_request_waits_its_turn() -> None:
    async def scenario() -> None:
        share = PoolShare(per_user=2, queue=5, wait_s=10)
        first, second, third = Holder(share, 1), Holder(share, 1), Holder(share, 1)
        await first.inside.wait()
        await second.inside.wait()
        other = Holder(share, 2)  # another user is not behind user 1's queue
        await other.inside.wait()
        assert share.in_use(1) == (2, 1)
        assert not third.inside.is_set()
        first.leave.set()
        await third.inside.wait()  # the slot passed straight to the waiting request
        assert share.in_use(1) == (2, 0)
        for h in (second, third, other):
            h.leave.set()
        await asyncio.gather(first.task, second.task, third.task, other.task)
        assert share.in_use(1) == share.in_use(2) == (0, 0)

    asyncio.run(scenario())


class FakePool:
    """Counts the connections the holders below take; `idle()` is what the real pool's `Pool.idle` answers."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def idle(self) -> int:
        return self.size - self.taken


class PoolHolder(Holder):
    """A request holding a pooled connection: it goes back to the pool before the share is released, as
    `Database.connection` does."""

    def __init__(self, share: PoolShare, user: int, pool: FakePool) -> None:
        self.pool = pool
        super().__init__(share, user)

    async def run(self) -> None:
        async with self.share.admit():
            self.pool.taken += 1
            self.inside.set()
            await self.leave.wait()
            self.pool.taken -= 1


async def turns_until(condition: Callable[[], bool]) -> None:
    for _ in range(100):  # event-loop turns, no wait for time
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def test_past_its_share_a_user_borrows_only_while_the_pool_keeps_that_many_idle_for_everyone_else() -> None:
    async def scenario() -> None:
        pool = FakePool(size=6)
        share = PoolShare(per_user=2, queue=5, wait_s=10, idle=pool.idle)
        mine = [PoolHolder(share, 1, pool) for _ in range(5)]
        for h in mine[:4]:  # two within the share, two lent while more than two stayed idle
            await asyncio.wait_for(h.inside.wait(), 5)
        await turns_until(lambda: share.in_use(1) == (4, 1))
        assert pool.idle() == 2
        assert not mine[4].inside.is_set()
        other = PoolHolder(share, 2, pool)  # another user still gets in at once
        await other.inside.wait()
        mine[2].leave.set()  # a lent connection comes back while the pool is busy: it is not lent again
        await mine[2].task
        assert share.in_use(1) == (3, 1)
        assert not mine[4].inside.is_set()
        other.leave.set()
        await other.task
        mine[3].leave.set()  # the pool is idle enough again: the waiting request gets the lent slot
        await mine[4].inside.wait()
        assert share.in_use(1) == (3, 0)
        for h in (mine[0], mine[1], mine[4]):
            h.leave.set()
        await asyncio.gather(*(h.task for h in mine))
        assert share.in_use(1) == (0, 0)
        assert pool.taken == 0

    asyncio.run(scenario())


def test_past_the_queue_or_the_wait_a_request_gets_429_with_retry_after() -> None:
    async def scenario() -> None:
        share = PoolShare(per_user=1, queue=1, wait_s=0.2)
        holder = Holder(share, 1)
        await holder.inside.wait()
        waiter = Holder(share, 1)  # queued: gives up after wait_s
        full = Holder(share, 1)  # the queue is full: refused at once
        with pytest.raises(ShareExceeded) as refused:
            await full.task
        assert (refused.value.status, refused.value.headers) == (429, {"Retry-After": "1"})
        with pytest.raises(ShareExceeded):
            await waiter.task
        assert share.in_use(1) == (1, 0)
        holder.leave.set()
        await holder.task
        assert share.in_use(1) == (0, 0)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_nothing_behind_and_unknown_or_nested_uses_are_not_counted() -> None:
    async def scenario() -> None:
        share = PoolShare(per_user=1, queue=5, wait_s=10)
        holder = Holder(share, 1)
        await holder.inside.wait()
        waiter = Holder(share, 1)
        for _ in range(100):  # event-loop turns until it has queued (no wait for time)
            if share.in_use(1) == (1, 1):
                break
            await asyncio.sleep(0)
        assert share.in_use(1) == (1, 1)
        waiter.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter.task
        assert share.in_use(1) == (1, 0)
        anonymous = Holder(share, None)  # before the guard knows the user (its own lookup, logins)
        await anonymous.inside.wait()

        async def nested() -> None:
            async with share.admit(), share.admit():  # a second connection of the same task
                pass

        await asyncio.wait_for(as_user(2, nested), 5)
        for h in (holder, anonymous):
            h.leave.set()
        await asyncio.gather(holder.task, anonymous.task)
        assert share.in_use(1) == (0, 0)

    asyncio.run(scenario())


def test_one_user_never_gets_the_whole_pool() -> None:
    assert pool_share(pool_size=10, per_user=3, queue=50, wait_s=5).per_user == 3
    assert pool_share(pool_size=3, per_user=5, queue=50, wait_s=5).per_user == 2
    assert pool_share(pool_size=1, per_user=3, queue=50, wait_s=5).per_user == 1
    assert pool_share(pool_size=10, per_user=0, queue=50, wait_s=5).per_user == 0  # 0: no bound


# --- the scenario, on a real api process ------------------------------------------------------------------


def other_users_requests(settings: Settings) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """What everyone else does meanwhile: (who, method, url, body) - reads and small writes of the portal and
    the desktop, each needing a pooled connection."""
    return [
        ("admin", "GET", "/api/projects", None),
        ("admin", "GET", "/api/customers", None),
        ("pnair", "GET", "/api/time-tracking?userId=3&date=2026-02-02", None),
        ("pnair", "GET", "/api/desktop/unfinished-tasks?userId=3", None),
        ("customer", "GET", "/api/lookups/project-form", None),
        ("admin", "POST", "/api/items", {"projectId": 2, "count": 1}),
        ("pnair", "POST", "/api/desktop/activities/start-unallocated", {}),
    ]


@pytest.mark.slow
def test_one_users_heavy_writes_leave_the_pool_to_everyone_else(fresh_db: Settings) -> None:
    # A one-second bound on waiting for a connection (DB_ACQUIRE_TIMEOUT_MS): a request of another user that has to
    # wait longer than that for a free connection fails, so starving them shows as errors, not only as latency.
    settings = dataclasses.replace(fresh_db, db_acquire_timeout_s=1.0)
    heavy_headers = {"Authorization": f"Bearer {token(settings, 'mreyes')}"}
    heavy: list[tuple[int, str | None, float]] = []  # (status, Retry-After, seconds)
    others: Counter[str] = Counter()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(HEAVY_WORKERS + 1)
    heavy_done = threading.Event()

    mine = "SELECT COUNT(*) AS n FROM items WHERE project_id = 1 AND created_by_user_id = 2"
    seeded = query(settings, mine)[0]["n"]
    with running("ccsm_api", settings) as server:

        def heavy_writer() -> None:
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                start.wait()
                until = time.monotonic() + HEAVY_SECONDS
                while time.monotonic() < until:
                    began = time.monotonic()
                    r = client.post("/api/items", headers=heavy_headers, json={"projectId": 1, "count": 1000})
                    with lock:
                        heavy.append((r.status_code, r.headers.get("retry-after"), time.monotonic() - began))

        def other_user(offset: int) -> None:
            plan = other_users_requests(settings)
            with httpx.Client(base_url=server.base_url, timeout=30) as client:
                i = offset
                while not heavy_done.wait(OTHER_PACE_S):  # paced like people using the portal, until the end
                    who, method, url, body = plan[i % len(plan)]
                    i += 1
                    if url.endswith("start-unallocated"):
                        body = {"uuid": f"fair-{offset}-{i}"}
                    began = time.monotonic()
                    try:
                        r = client.request(
                            method, url, json=body, headers={"Authorization": f"Bearer {token(settings, who)}"}
                        )
                        ok = r.status_code < 400
                        outcome = str(r.status_code)
                    except httpx.HTTPError as exc:
                        ok, outcome = False, type(exc).__name__
                    with lock:
                        latencies.append(time.monotonic() - began)
                        others[outcome] += 1
                        if not ok:
                            failures.append(f"{method} {url} -> {outcome}")

        writers = [threading.Thread(target=heavy_writer) for _ in range(HEAVY_WORKERS)]
        readers = [threading.Thread(target=other_user, args=(n,)) for n in range(OTHER_USERS)]
        for t in writers + readers:
            t.start()
        start.wait()
        for t in writers:
            t.join(HEAVY_SECONDS + 90)
        heavy_done.set()
        for t in readers:
            t.join(60)

    total = sum(others.values())
    statuses = Counter(status for status, _, _ in heavy)
    print(f"\nheavy user: {dict(statuses)}; slowest {max(s for _, _, s in heavy):.1f} s")
    print(f"other users: {total} requests, {len(failures)} failed ({100 * len(failures) / max(total, 1):.2f} %)")
    latencies.sort()
    p99, worst = latencies[int(len(latencies) * 0.99)], latencies[-1]
    print(f"other users' answers: {dict(others)}; latency p99 {p99:.2f} s, max {worst:.2f} s")
    print(f"first failures: {failures[:5]}")

    # the heavy user: every request answered (none hung), each a success or a clear "retry later"
    assert all(not t.is_alive() for t in writers)
    assert len(heavy) >= HEAVY_WORKERS
    assert all(status == 201 or (status in (429, 503) and retry) for status, retry, _ in heavy), statuses
    assert statuses[201] >= 1
    # nothing lost, nothing half-done: 1,000 items for each success
    assert query(settings, mine)[0]["n"] - seeded == 1000 * statuses[201]
    # everyone else: under 1 % errors, over a meaningful number of requests
    assert total >= 100
    assert len(failures) / total < 0.01, failures[:10]
