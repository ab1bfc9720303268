"""The response cache on its own (real Redis for the data version, a fake guard and handlers): one handler call
for concurrent misses, nothing stored across a commit, a memory bound, and no cache without the data version."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ccsm_core.guard import Principal
from ccsm_core.keyspace import Keyspace
from ccsm_core.response_cache import PER_ROLE, PER_USER, DataVersion, ResponseCache
from ccsm_core.settings import Settings


class FakeGuard:
    """Authenticates every request as `principal` (the real guard is tested in test_guard)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    async def authenticate(self, request: Request) -> Principal:
        return self.principal


def _request(path: str, principal: Principal, query: bytes = b"") -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": [],
        "state": {"guard": FakeGuard(principal)},
    }
    return Request(scope)


async def _body(answer: Any) -> bytes:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await answer({"type": "http"}, receive, send)
    return b"".join(m.get("body", b"") for m in sent)


class Counting:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.calls = 0
        self.gate = gate
        self.started = asyncio.Event()

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return Response(b'{"n":%d}' % self.calls, media_type="application/json")


EMPLOYEE = Principal(3, 2, "pnair")


def _with(settings: Settings, scenario: Any, keyspace: Keyspace | None = None) -> Any:
    async def run() -> Any:
        ks = keyspace or Keyspace(settings)
        try:
            return await scenario(ResponseCache(DataVersion(ks), max_bytes=64 * 1024))
        finally:
            await ks.close()

    return asyncio.run(run())


def test_concurrent_misses_share_one_handler_call_and_repeats_cost_none(settings: Settings) -> None:
    async def scenario(cache: ResponseCache) -> tuple[int, set[bytes]]:
        gate = asyncio.Event()
        handler = Counting(gate)
        waiting = [asyncio.create_task(cache.respond(_request("/r", EMPLOYEE), handler, PER_USER)) for _ in range(50)]
        await handler.started.wait()
        pending = cache.version.reader._current  # the GET the other 49 wait for
        if pending is not None:
            await asyncio.shield(pending)
        for _ in range(3):  # and they reach the flight
            await asyncio.sleep(0)
        gate.set()
        answers = await asyncio.gather(*waiting)
        answers += [await cache.respond(_request("/r", EMPLOYEE), handler, PER_USER) for _ in range(10)]
        return handler.calls, {await _body(a) for a in answers}

    assert _with(settings, scenario) == (1, {b'{"n":1}'})


def test_an_answer_read_while_this_process_committed_is_not_kept(settings: Settings) -> None:
    async def scenario(cache: ResponseCache) -> tuple[int, bytes]:
        gate = asyncio.Event()
        handler = Counting(gate)
        first = asyncio.create_task(cache.respond(_request("/r", EMPLOYEE), handler, PER_USER))
        await handler.started.wait()
        cache.version.on_commit("transaction-commit")  # committed while the handler was reading
        gate.set()
        await first
        second = await cache.respond(_request("/r", EMPLOYEE), handler, PER_USER)
        return handler.calls, await _body(second)

    assert _with(settings, scenario) == (2, b'{"n":2}')


def test_another_process_commit_makes_the_next_read_call_the_handler(settings: Settings) -> None:
    async def scenario(cache: ResponseCache) -> int:
        handler = Counting()
        await cache.respond(_request("/r", EMPLOYEE), handler, PER_USER)
        await cache.version.keyspace.client.incr(cache.version.key)  # what CommitBarrier does elsewhere
        await cache.respond(_request("/r", EMPLOYEE), handler, PER_USER)
        return handler.calls

    assert _with(settings, scenario) == 2


def test_per_role_answers_are_shared_by_one_role_and_per_user_ones_are_not(settings: Settings) -> None:
    other = Principal(2, 2, "mreyes")
    admin = Principal(1, 1, "admin")

    async def scenario(cache: ResponseCache) -> tuple[int, int]:
        shared, own = Counting(), Counting()
        for who in (EMPLOYEE, other, admin):
            await cache.respond(_request("/shared", who), shared, PER_ROLE)
            await cache.respond(_request("/own", who), own, PER_USER)
        return shared.calls, own.calls

    assert _with(settings, scenario) == (2, 3)


def test_the_cache_stays_within_its_memory_bound(settings: Settings) -> None:
    async def scenario(cache: ResponseCache) -> tuple[int, int, int]:
        handler = Counting()
        for n in range(2000):
            await cache.respond(_request("/r", EMPLOYEE, b"page=%d" % n), handler, PER_USER)
        return cache.bytes, len(cache), handler.calls

    used, entries, calls = _with(settings, scenario)
    assert used <= 64 * 1024
    assert 0 < entries < 2000
    assert calls == 2000


def test_without_redis_every_read_calls_the_handler(settings: Settings) -> None:
    broken = Keyspace(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))

    async def scenario(cache: ResponseCache) -> int:
        handler = Counting()
        for _ in range(3):
            await cache.respond(_request("/r", EMPLOYEE), handler, PER_USER)
        return handler.calls

    assert _with(settings, scenario, broken) == 3


def test_concurrent_commits_share_an_increment_sent_after_each_of_them(settings: Settings) -> None:
    async def scenario() -> tuple[int, int]:
        ks = Keyspace(settings)
        version = DataVersion(ks)
        try:
            before = int(await ks.client.get(version.key) or 0)
            first = asyncio.create_task(version.publish())
            await asyncio.sleep(0)  # the task runs up to its wait: the first INCR is on its way
            assert version.bumper._current is not None
            # committed after that INCR was sent: they must wait for the next one, and share it
            await asyncio.gather(first, *(version.publish() for _ in range(20)))
            after = int(await ks.client.get(version.key) or 0)
            return version.bumper.calls, after - before
        finally:
            await ks.close()

    assert asyncio.run(scenario()) == (2, 2)
