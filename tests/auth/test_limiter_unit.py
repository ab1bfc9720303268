"""LoginLimiter against a fake Redis: the switch to per-process counters and back, and refunds."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from ccsm_auth.limits import (
    LOCAL_MAX_ENTRIES,
    Limit,
    LoginLimiter,
    LoginLimits,
    RateLimited,
    Slot,
    _LocalCounters,
    address_ref,
)


class FakeRedis:
    """Just enough of redis.asyncio for the limiter: its three scripts over a dict, and a switch to break it."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.down = False

    def register_script(self, source: str) -> Any:
        async def script(keys: list[str], args: list[Any] | None = None) -> Any:
            if self.down:
                raise ConnectionError("redis is down")
            if "DECR" in source:
                for k in keys:
                    if k in self.counters:
                        self.counters[k] -= 1
                return 0
            assert args is not None
            key = keys[0]
            if "ARGV[3]" in source and self.counters.get(key, 0) >= int(args[1]) and args[2] != "1":
                return [-1, 60_000]
            self.counters[key] = self.counters.get(key, 0) + 1
            return [self.counters[key], 60_000]

        return script


class FakeKeyspace:
    def __init__(self) -> None:
        self.client = FakeRedis()

    def key(self, *parts: str | int) -> str:
        return "t:" + ":".join(str(p) for p in parts)


LIMIT = Limit(2, 60)


def make(retry_after_s: float) -> tuple[LoginLimiter, FakeKeyspace]:
    ks = FakeKeyspace()
    limits = LoginLimits(account_address=LIMIT, account=LIMIT, ip=LIMIT, retry_after_s=retry_after_s)
    return LoginLimiter(ks, limits), ks  # type: ignore[arg-type]


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


@pytest.mark.parametrize("down", [False, True], ids=["redis", "local counters"])
def test_a_spent_budget_refuses_callers_that_failed_recently_and_evaluates_the_others(down: bool) -> None:
    limiter, ks = make(60)
    ks.client.down = down
    budget = Limit(2, 60)

    async def scenario() -> list[str]:
        outcomes = []
        for caller in ("a", "a", "a", "b", "b", "c"):
            own = await limiter.reserve(f"ip:{caller}", Limit(100, 60), "ip")
            try:
                await limiter.reserve_budget("global", budget, "global", own)
            except RateLimited as exc:
                outcomes.append(f"{caller} refused ({exc.scope}, {exc.headers['Retry-After']} s)")
            else:
                outcomes.append(f"{caller} evaluated")
        return outcomes

    # a spends the budget; then b and c, fresh, are each evaluated once; b's second attempt is refused
    assert asyncio.run(scenario()) == [
        "a evaluated",
        "a evaluated",
        "a refused (global, 60 s)",
        "b evaluated",
        "b refused (global, 60 s)",
        "c evaluated",
    ]


def test_a_success_refunds_its_budget_slot_too() -> None:
    limiter, ks = make(60)

    async def scenario() -> None:
        own = await limiter.reserve("ip:x", Limit(100, 60), "ip")
        slot = await limiter.reserve_budget("global", Limit(2, 60), "global", own)
        await limiter.refund([own, slot])

    asyncio.run(scenario())
    assert ks.client.counters == {"ip:x": 0, "global": 0}


def test_only_a_counter_holding_more_than_this_attempt_counts_as_a_recent_failure() -> None:
    assert not Slot("k", "redis", count=1).failed_recently
    assert Slot("k", "redis", count=2).failed_recently


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("198.51.100.7", "198.51.100.7"),
    ],
)
def test_addresses_are_counted_by_host_ipv6_by_its_64(a: str, b: str) -> None:
    assert address_ref(a) == address_ref(b)


def test_other_ipv4_addresses_and_other_ipv6_64s_are_counted_apart() -> None:
    assert address_ref("198.51.100.7") != address_ref("198.51.100.8")
    assert address_ref("2001:db8:1:2::1") != address_ref("2001:db8:1:3::1")


def test_a_flood_of_live_keys_is_pruned_to_three_quarters_so_the_next_prune_is_far_away() -> None:
    """Redis down and a flood of distinct names: the per-process table must not be rescanned on every login."""
    counters = _LocalCounters()
    for i in range(LOCAL_MAX_ENTRIES):
        counters.reserve(f"k{i}", 900.0, now=0.0)
    assert len(counters.entries) == LOCAL_MAX_ENTRIES
    counters.reserve("one-more", 900.0, now=1.0)  # over the cap, every window still live
    assert len(counters.entries) == LOCAL_MAX_ENTRIES * 3 // 4
    assert "k0" not in counters.entries  # the oldest are forgotten first
    assert "one-more" in counters.entries  # the newest is kept
    table = counters.entries
    for i in range(LOCAL_MAX_ENTRIES // 4 - 1):
        counters.reserve(f"n{i}", 900.0, now=2.0)
    assert counters.entries is table  # a quarter of the cap later, still no rescan


def test_ended_windows_are_dropped_before_any_live_one() -> None:
    counters = _LocalCounters()
    for i in range(LOCAL_MAX_ENTRIES):
        counters.reserve(f"old{i}", 10.0, now=0.0)
    counters.reserve("live", 900.0, now=100.0)
    assert list(counters.entries) == ["live"]
