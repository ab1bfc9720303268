"""Brute-force defence (fix 4, issue 12 items 1, 3, 10): per client address, per (account, address), the per-account
and the auth-code budgets, in Redis, 429 with Retry-After."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest
import redis

from ccsm_auth.app import create_app
from ccsm_auth.limits import Limit, LoginLimits
from ccsm_core.settings import Settings

TOO_MANY = {"error": "Too many login attempts, please try again later"}
TIGHT = LoginLimits(account_address=Limit(3, 60), ip=Limit(5, 60))


def wrong(client: Any, username: str = "admin") -> Any:
    return client.post("/api/login", json={"username": username, "password": "nope"})


def right(client: Any) -> Any:
    return client.post("/api/login", json={"username": "admin", "password": "Admin#2025"})


def test_an_address_is_locked_out_of_an_account_after_its_failures_even_for_the_right_password(auth_client) -> None:
    with auth_client(limits=TIGHT) as client:
        statuses = [wrong(client).status_code for _ in range(3)]
        locked = right(client)
    assert statuses == [401, 401, 401]
    assert locked.status_code == 429
    assert locked.json() == TOO_MANY
    assert 1 <= int(locked.headers["retry-after"]) <= 60


def test_ten_wrong_passwords_from_one_address_do_not_lock_the_account_out_for_another(auth_client) -> None:
    """Issue 12 item 3, with the default limits: the lockout is per (account, address)."""
    with auth_client() as attacker:
        statuses = [wrong(attacker).status_code for _ in range(10)]
        locked = right(attacker)
    with auth_client(client=("198.51.100.20", 1)) as admin:
        elsewhere = right(admin)
    assert statuses == [401] * 10
    assert (locked.status_code, locked.json()) == (429, TOO_MANY)
    assert int(locked.headers["retry-after"]) >= 1
    assert elsewhere.status_code == 200
    assert elsewhere.json()["id"] == 1


def test_the_account_budget_holds_across_addresses_without_locking_out_an_address_that_did_not_fail(
    auth_client,
) -> None:
    limits = LoginLimits(account_address=Limit(10, 60), account=Limit(4, 60), ip=Limit(50, 60))
    with (
        auth_client(limits=limits, client=("198.51.100.31", 1)) as a,
        auth_client(limits=limits, client=("198.51.100.32", 1)) as b,
    ):
        spent = [wrong(c).status_code for c in (a, b, a, b)]  # 4 failures from 2 addresses: the budget
        refused = [right(a), wrong(b)]
    with auth_client(limits=limits, client=("198.51.100.33", 1)) as fresh:
        admin = right(fresh)
        guess = wrong(fresh)
        again = wrong(fresh)
    assert spent == [401] * 4
    assert [(r.status_code, r.json()) for r in refused] == [(429, TOO_MANY)] * 2
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert admin.status_code == 200  # the right password from an address that has not failed
    assert guess.status_code == 401  # a fresh address is evaluated once...
    assert again.status_code == 429  # ...and is then an address that failed recently


def test_the_account_counter_follows_the_name_as_the_database_compares_it(auth_client) -> None:
    with auth_client(limits=TIGHT) as client:
        for name in ("admin", "ADMIN", "Admin "):
            assert wrong(client, name).status_code == 401
        assert [wrong(client, n).status_code for n in ("aDmIn", "ädmin", "admin\u200b", "\uff41dmin")] == [429] * 4


def test_an_unknown_name_is_limited_exactly_like_a_real_one(auth_client) -> None:
    with auth_client(limits=TIGHT) as client:
        unknown = [wrong(client, "ghost").status_code for _ in range(4)]
    with auth_client(limits=TIGHT, client=("203.0.113.8", 1)) as client:
        known = [wrong(client, "mreyes").status_code for _ in range(4)]
    assert unknown == known == [401, 401, 401, 429]


@pytest.mark.parametrize("variant", ["{}\u200b", "{} ", "{}\u00a0", "{}\u00ad", "{}\U0001f600", "\u200b{}"])
def test_a_variant_of_a_name_reveals_nothing_about_whether_it_exists(auth_client, variant: str) -> None:
    """Issue 12 item 10: after the failures on a name, a spelling the collation treats as the same name answers
    the same for a real user and an unknown one (both 429, the same counter), and a spelling it treats as
    another name is also the same for both (both 401)."""
    answers = {}
    for n, name in enumerate(("mreyes", "ghost")):
        with auth_client(limits=TIGHT, client=(f"203.0.113.{20 + n}", 1)) as client:
            for _ in range(3):
                assert wrong(client, name).status_code == 401
            answers[name] = wrong(client, variant.format(name)).status_code
    assert answers["mreyes"] == answers["ghost"], answers


def test_successes_do_not_use_up_the_limit(auth_client) -> None:
    with auth_client(limits=TIGHT) as client:
        statuses = [right(client).status_code for _ in range(8)]
    assert statuses == [200] * 8


def test_one_ip_is_limited_across_accounts(auth_client) -> None:
    with auth_client(limits=TIGHT) as client:
        names = ["a1", "a2", "a3", "a4", "a5", "a6"]
        statuses = [wrong(client, n).status_code for n in names]
        blocked = right(client)
    with auth_client(limits=TIGHT, client=("198.51.100.9", 1)) as other:
        elsewhere = right(other)
    assert statuses == [401] * 5 + [429]
    assert blocked.status_code == 429
    assert "retry-after" in blocked.headers
    assert elsewhere.status_code == 200


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(auth_client) -> None:
    limits = LoginLimits(account_address=Limit(100, 60), ip=Limit(2, 60))
    # Untrusted peer: XFF is ignored, every "client" shares the peer's counter.
    with auth_client(limits=limits, client=("203.0.113.50", 1)) as client:
        spoofed = [
            client.post(
                "/api/login",
                json={"username": f"u{i}", "password": "x"},
                headers={"X-Forwarded-For": f"192.0.2.{i}"},
            ).status_code
            for i in range(3)
        ]
    assert spoofed == [401, 401, 429]
    # Trusted proxy: each forwarded client has its own counter.
    with auth_client(limits=limits, client=("10.0.0.2", 1), trusted_proxies=("10.0.0.0/8",)) as client:
        forwarded = [
            client.post(
                "/api/login",
                json={"username": f"u{i}", "password": "x"},
                headers={"X-Forwarded-For": f"192.0.2.{i}"},
            ).status_code
            for i in range(3)
        ]
        same_client = [
            client.post(
                "/api/login", json={"username": "v", "password": "x"}, headers={"X-Forwarded-For": "192.0.2.77"}
            ).status_code
            for _ in range(3)
        ]
    assert forwarded == [401, 401, 401]
    assert same_client == [401, 401, 429]


def test_the_limit_holds_across_tasks_because_the_counters_are_in_redis(auth_client) -> None:
    with auth_client(limits=TIGHT, client=("198.51.100.1", 1)) as first:
        assert [wrong(first).status_code for _ in range(2)] == [401, 401]
    with auth_client(limits=TIGHT, client=("198.51.100.1", 2)) as second:  # another task, the same client
        assert wrong(second).status_code == 401
        assert right(second).status_code == 429


def test_the_lock_lifts_when_the_window_ends(auth_client, auth_settings: Settings) -> None:
    limits = LoginLimits(account_address=Limit(2, 1.0), ip=Limit(50, 60))
    r = redis.Redis.from_url(auth_settings.redis_url)
    try:
        with auth_client(limits=limits) as client:
            assert [wrong(client).status_code for _ in range(3)] == [401, 401, 429]
            pattern = f"{auth_settings.redis_prefix}auth:limit:login:account-ip:*"
            keys = list(r.scan_iter(match=pattern))
            assert len(keys) == 1
            deadline = time.monotonic() + 10
            while r.exists(keys[0]) and time.monotonic() < deadline:  # the window's own expiry, with a deadline
                time.sleep(0.05)
            assert not r.exists(keys[0])
            assert right(client).status_code == 200
    finally:
        r.close()


def test_redis_keys_hold_no_login_name(auth_client, auth_settings: Settings) -> None:
    r = redis.Redis.from_url(auth_settings.redis_url)
    try:
        with auth_client(limits=TIGHT) as client:
            wrong(client, "secret-looking-name")
            client.post("/api/desktop/login-authcode", json={"code": "9999"})
        keys = [k.decode() for k in r.scan_iter(match=f"{auth_settings.redis_prefix}*")]
    finally:
        r.close()
    # login: address, (account, address), account; authcode: address, global
    assert len(keys) == 5
    assert not any("secret-looking-name" in k or "9999" in k or "203.0.113.7" in k for k in keys)


def test_a_burst_of_parallel_guesses_gets_only_the_limit(auth_settings: Settings) -> None:
    """Slots are reserved before the password is checked, so concurrency cannot overshoot the limit."""
    limits = LoginLimits(account_address=Limit(4, 60), ip=Limit(100, 60))

    async def scenario() -> list[int]:
        app = create_app(auth_settings, limits=limits)
        async with app.router.lifespan_context(app) as state:
            transport = httpx.ASGITransport(app=_with_state(app, state), client=("203.0.113.7", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
                responses = await asyncio.gather(
                    *(client.post("/api/login", json={"username": "admin", "password": "nope"}) for _ in range(20))
                )
        return sorted(r.status_code for r in responses)

    statuses = asyncio.run(scenario())
    assert statuses == [401] * 4 + [429] * 16


def _with_state(app: Any, state: dict[str, Any]) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = dict(state)
        await app(scope, receive, send)

    return asgi


def test_with_redis_down_logins_work_and_the_limit_holds_per_process(auth_client) -> None:
    """Fail open to per-process counters (limits.py): sign-in survives a Redis outage, brute force does not."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with auth_client(limits=TIGHT, redis_url=f"redis://127.0.0.1:{port}/0") as client:
        ok = right(client)
        failures = [wrong(client).status_code for _ in range(4)]
        code = client.post("/api/desktop/login-authcode", json={"code": "888"})
    assert ok.status_code == 200
    assert failures == [401, 401, 401, 429]
    assert code.status_code == 200


def test_the_authcode_endpoint_is_limited_per_address(auth_client) -> None:
    with auth_client(limits=TIGHT) as client:
        guesses = [client.post("/api/desktop/login-authcode", json={"code": f"9{i}"}).status_code for i in range(6)]
        blocked = client.post("/api/desktop/login-authcode", json={"code": "888"})
    assert guesses == [200] * 5 + [429]
    assert blocked.status_code == 429
    assert blocked.json() == TOO_MANY
    assert int(blocked.headers["retry-after"]) >= 1


def code(client: Any, value: str) -> Any:
    return client.post("/api/desktop/login-authcode", json={"code": value})


def test_the_global_code_budget_refuses_addresses_that_failed_and_evaluates_fresh_ones(auth_client) -> None:
    """Issue 12 item 1: failed codes from all clients share a budget; while it is spent an address that failed
    recently gets 429, one that did not is still evaluated (once), so the right code gets in."""
    limits = LoginLimits(ip=Limit(50, 60), authcode_global=Limit(3, 60))
    with auth_client(limits=limits, client=("198.51.100.41", 1)) as a:
        spent = [code(a, f"10{i}").json() for i in range(3)]
        after = code(a, "888")  # even the right code: this address failed recently
    with auth_client(limits=limits, client=("198.51.100.42", 1)) as b:
        operator = code(b, "888")
        guess = code(b, "123")
        again = code(b, "777")
    assert spent == [None] * 3
    assert (after.status_code, after.json()) == (429, TOO_MANY)
    assert int(after.headers["retry-after"]) >= 1
    assert operator.json()["login"] == "pnair"
    assert (guess.status_code, guess.json()) == (200, None)
    assert (again.status_code, again.json()) == (429, TOO_MANY)


def test_the_global_code_budget_is_shared_by_every_auth_task(auth_client) -> None:
    limits = LoginLimits(ip=Limit(50, 60), authcode_global=Limit(2, 60))
    with auth_client(limits=limits, client=("198.51.100.51", 1)) as first:
        assert [code(first, f"20{i}").json() for i in range(2)] == [None, None]
    with auth_client(limits=limits, client=("198.51.100.51", 2)) as second:  # another task, the same address
        assert code(second, "888").status_code == 429


def test_with_redis_down_the_code_budget_holds_per_process(auth_client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limits = LoginLimits(ip=Limit(50, 60), authcode_global=Limit(2, 60))
    with auth_client(limits=limits, redis_url=f"redis://127.0.0.1:{port}/0") as client:
        statuses = [code(client, f"30{i}").status_code for i in range(3)]
    assert statuses == [200, 200, 429]
