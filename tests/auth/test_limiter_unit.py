"""LoginLimiter against a fake Redis: the switch to per-process counters and back, and refunds."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from ccsm_auth.limits import Limit, LoginLimiter, LoginLimits, RateLimited, fold_name


class FakeRedis:
    """Just enough of redis.asyncio for the limiter: two scripts over a dict, and a switch to break it."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.down = False

    def register_script(self, source: str) -> Any:
        async def script(keys: list[str], args: list[Any] | None = None) -> Any:
            if self.down:
                raise ConnectionError("redis is down")
            if "INCR" in source:
                out: list[int] = []
                for k in keys:
                    self.counters[k] = self.counters.get(k, 0) + 1
                    out += [self.counters[k], 60_000]
                return out
            for k in keys:
                if k in self.counters:
                    self.counters[k] -= 1
            return 0

        return script


class FakeKeyspace:
    def __init__(self) -> None:
        self.client = FakeRedis()

    def key(self, *parts: str | int) -> str:
        return "t:" + ":".join(str(p) for p in parts)


LIMIT = Limit(2, 60)


def make(retry_after_s: float) -> tuple[LoginLimiter, FakeKeyspace]:
    ks = FakeKeyspace()
    return LoginLimiter(ks, LoginLimits(account=LIMIT, ip=LIMIT, retry_after_s=retry_after_s)), ks  # type: ignore[arg-type]


def test_a_refund_gives_the_slot_back_where_it_was_taken() -> None:
    limiter, ks = make(60)

    async def scenario() -> None:
        slot = await limiter.reserve("k", LIMIT, "ip")
        assert ks.client.counters == {"k": 1}
        await limiter.refund([slot])

    asyncio.run(scenario())
    assert ks.client.counters == {"k": 0}


def test_redis_failing_switches_to_local_counters_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ccsm.auth.limits")
    limiter, ks = make(60)
    ks.client.down = True

    async def scenario() -> list[str]:
        backends = [(await limiter.reserve("k", LIMIT, "account")).backend for _ in range(2)]
        with pytest.raises(RateLimited) as err:
            await limiter.reserve("k", LIMIT, "account")
        assert err.value.scope == "account"
        assert err.value.headers["Retry-After"] == "60"
        return backends

    assert asyncio.run(scenario()) == ["local", "local"]
    assert limiter.degraded
    assert [r.getMessage() for r in caplog.records].count(
        "rate-limit counters unavailable in Redis; using per-process counters"
    ) == 1


def test_redis_is_tried_again_after_the_retry_pause(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ccsm.auth.limits")
    limiter, ks = make(0)  # no pause: the next attempt tries Redis again
    ks.client.down = True

    async def scenario() -> tuple[str, str]:
        first = await limiter.reserve("k", LIMIT, "ip")
        ks.client.down = False
        second = await limiter.reserve("k", LIMIT, "ip")
        return first.backend, second.backend

    assert asyncio.run(scenario()) == ("local", "redis")
    assert any(r.getMessage() == "rate-limit counters back in Redis" for r in caplog.records)


@pytest.mark.parametrize(
    ("a", "b"),
    [("Admin", "admin"), ("ädmin", "admin"), ("admin  ", "admin"), ("\uff21\uff24\uff2d\uff29\uff2e", "admin")],
)
def test_name_folding_approximates_the_case_and_accent_insensitive_collation(a: str, b: str) -> None:
    assert fold_name(a) == fold_name(b)
