"""Issue 12 item 4: a password (or auth code) change, a deactivation and a role change revoke the user's earlier
tokens everywhere, durably (`users.tokens_revoked_at`), and a reactivation does not bring them back."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from typing import Any

import httpx
import pytest
import redis

from ccsm_core.settings import Settings
from tests.api.test_desktop_flow import everything
from tests.api.test_users import MREYES
from tests.api.transcript import auth, query, token
from tests.core.test_tokens import forge
from tests.gateway.wsclient import close_code, opened
from tests.harness import running

NEW_PASSWORD = "Changed#2026"
INVALID = {"error": "Invalid or expired token"}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def login(client: Any, username: str, password: str) -> str:
    r = client.post("/api/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    value: str = r.json()["accessToken"]
    return value


def customers(client: Any, headers: dict[str, str]) -> tuple[int, Any]:
    r = client.get("/api/customers", headers=headers)
    return r.status_code, r.json()


def test_a_password_change_revokes_earlier_tokens_and_a_login_right_after_it_works(fresh_db: Settings) -> None:
    with everything(fresh_db) as client:
        old = login(client, "mreyes", "Employee#2025")
        assert customers(client, bearer(old))[0] == 200  # cached as valid in this process
        changed = client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "password": NEW_PASSWORD})
        fresh = login(client, "mreyes", NEW_PASSWORD)  # within milliseconds: the same second, most likely
        after_old = customers(client, bearer(old))
        after_fresh = customers(client, bearer(fresh))
        desktop_old = client.get("/api/desktop/bootstrap", headers=bearer(old))
    assert changed.status_code == 200
    assert after_old == (401, INVALID)
    assert after_fresh[0] == 200
    assert desktop_old.status_code == 401
    stored = query(fresh_db, "SELECT tokens_revoked_at FROM users WHERE id = 2")[0]["tokens_revoked_at"]
    assert stored is not None
    assert stored.microsecond % 1000 == 0  # DATETIME(3): milliseconds


def revoked_at(settings: Settings, user_id: int) -> float | None:
    value = query(settings, "SELECT tokens_revoked_at FROM users WHERE id = %s", (user_id,))[0]["tokens_revoked_at"]
    return None if value is None else value.replace(tzinfo=dt.UTC).timestamp()


def test_the_same_second_semantics_one_millisecond_before_is_refused_and_the_instant_itself_is_not(
    fresh_db: Settings,
) -> None:
    """`iat` is whole seconds; our tokens also say `iat_ms`. A token issued 1 ms before the revocation (the same
    second, unless the revocation fell on a second's first millisecond) is refused; one issued at the revocation
    instant or later is accepted (a login right after a password change works); a token with only a whole-second
    `iat` in the revocation's second (the old backend's kind) might predate it and is refused."""
    with everything(fresh_db) as client:
        client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "password": NEW_PASSWORD})
        at = revoked_at(fresh_db, 2)
        assert at is not None
        just_before = token(fresh_db, "mreyes", now=at - 0.001)
        at_instant = token(fresh_db, "mreyes", now=at)
        whole_second = forge(
            {"alg": "HS256", "typ": "JWT"},
            {"sub": 2, "role": 2, "login": "mreyes", "iat": math.floor(at), "exp": math.floor(at) + 3600},
            secret=fresh_db.jwt_secret,
        )
        answers = [customers(client, bearer(t))[0] for t in (just_before, at_instant, whole_second)]
    assert answers == [401, 200, 401]


@pytest.mark.parametrize(
    "change",
    [{"password": NEW_PASSWORD}, {"authcode": "777001"}, {"system_role": 1}, {"is_active": 0}],
    ids=["password", "authcode", "role", "deactivation"],
)
def test_each_credential_or_access_change_writes_the_revocation_instant(
    fresh_db: Settings, change: dict[str, Any]
) -> None:
    with everything(fresh_db) as client:
        before = time.time()
        r = client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, **change})
    assert r.status_code == 200
    at = revoked_at(fresh_db, 2)
    assert at is not None
    assert at >= before - 0.001


def test_an_edit_that_changes_no_credential_or_access_keeps_the_tokens(fresh_db: Settings) -> None:
    with everything(fresh_db) as client:
        old = token(fresh_db, "mreyes")
        r = client.put(
            "/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "first_name": "Marc", "password": ""}
        )
        still = customers(client, bearer(old))
    assert r.status_code == 200
    assert still[0] == 200
    assert query(fresh_db, "SELECT tokens_revoked_at FROM users WHERE id = 2") == [{"tokens_revoked_at": None}]


def test_deactivate_then_reactivate_does_not_bring_old_tokens_back(fresh_db: Settings) -> None:
    with everything(fresh_db) as client:
        old = login(client, "mreyes", "Employee#2025")
        admin = auth(fresh_db, "admin")
        client.put("/api/users/2", headers=admin, json={**MREYES, "is_active": 0})
        client.put("/api/users/2", headers=admin, json={**MREYES, "is_active": 1})
        after = customers(client, bearer(old))
        fresh = customers(client, bearer(login(client, "mreyes", "Employee#2025")))
    assert after == (401, INVALID)
    assert fresh[0] == 200


def test_the_revocation_survives_redis_losing_its_keys_and_a_process_restart(fresh_db: Settings) -> None:
    """Redis restarted without persistence: the revocation log and every counter are gone. A new process has an
    empty cache. The old token is still refused: the instant is in the database."""
    with everything(fresh_db) as client:
        old = login(client, "mreyes", "Employee#2025")
        client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "password": NEW_PASSWORD})
    r = redis.Redis.from_url(fresh_db.redis_url)
    try:
        r.delete(f"{fresh_db.redis_prefix}revocations:log")
        assert not r.exists(f"{fresh_db.redis_prefix}revocations:log")
    finally:
        r.close()
    with everything(fresh_db) as restarted:
        assert customers(restarted, bearer(old)) == (401, INVALID)
        assert customers(restarted, bearer(login(restarted, "mreyes", NEW_PASSWORD)))[0] == 200


@pytest.mark.slow
def test_a_password_change_reaches_another_api_process_and_closes_the_users_socket_within_a_second(
    fresh_db: Settings,
) -> None:
    old = token(fresh_db, "mreyes")
    with (
        running("ccsm_api", fresh_db) as writer,
        running("ccsm_api", fresh_db) as reader,
        running("ccsm_gateway", fresh_db, extra_env={"LOG_LEVEL": "info"}) as gateway,
    ):
        gateway.wait_for_line("revocation log read")
        with httpx.Client(base_url=reader.base_url, timeout=10) as other:
            assert customers(other, bearer(old))[0] == 200  # the reader has the user cached as valid

            async def scenario() -> tuple[tuple[int | None, str], float, tuple[int, Any]]:
                async with await opened(gateway, old) as ws:
                    started = time.monotonic()
                    async with httpx.AsyncClient(base_url=writer.base_url, timeout=10) as w:
                        put = await w.put(
                            "/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "password": NEW_PASSWORD}
                        )
                        assert put.status_code == 200
                    closed = await close_code(ws)
                    # The other api process: refused as soon as the revocation message got there.
                    async with httpx.AsyncClient(base_url=reader.base_url, timeout=10) as r:
                        deadline = started + 1.0
                        answer = customers_status(await r.get("/api/customers", headers=bearer(old)))
                        while answer[0] != 401 and time.monotonic() < deadline:
                            await asyncio.sleep(0.01)  # polling a condition, with a deadline
                            answer = customers_status(await r.get("/api/customers", headers=bearer(old)))
                    return closed, time.monotonic() - started, answer

            closed, took, answer = asyncio.run(scenario())
    assert closed == (4401, "Unauthorized")
    assert answer == (401, INVALID)
    assert took < 1.0


def customers_status(r: httpx.Response) -> tuple[int, Any]:
    return r.status_code, r.json()
