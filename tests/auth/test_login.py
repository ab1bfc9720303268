"""POST /api/login: every branch with the old backend's exact bodies (examples.json), plus the fixes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES: list[dict[str, Any]] = orjson.loads((ROOT / "fixtures" / "examples.json").read_bytes())
LOGIN_CALLS = [
    c
    for e in EXAMPLES
    if e["endpoint"] == "POST /api/login"
    for c in e["calls"]
    if c["body"].get("username") != "probeuser"  # made through POST /api/users (the api's tests)
]


def stored_password(settings: Settings, user_id: int) -> str:
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute("SELECT password FROM users WHERE id = %s", (user_id,))
        return str(cur.fetchone()[0])
    finally:
        conn.close()


def run_sql(settings: Settings, sql: str, args: tuple[Any, ...] = ()) -> None:
    conn = connect_sync(settings, settings.db_name)
    try:
        conn.cursor().execute(sql, args)
    finally:
        conn.close()


def expect_redacted(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, except that the reference's tokens are redacted: ours must be present and be JWTs."""
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if key == "accessToken" and isinstance(value, str):
            assert actual[key].count(".") == 2
        else:
            assert actual[key] == value, key


def test_every_recorded_login_call_gets_the_recorded_status_and_body(auth_client) -> None:
    with auth_client() as client:
        for call in LOGIN_CALLS:
            r = client.post("/api/login", json=call["body"])
            assert r.status_code == call["status"], call["note"]
            expect_redacted(r.json(), call["response"])


def test_the_token_carries_numeric_sub_role_login_and_the_configured_lifetime(auth_client, auth_settings) -> None:
    with auth_client(jwt_expires_in="2 days", jwt_expires_seconds=172800) as client:
        body = client.post("/api/login", json={"username": "mreyes", "password": "Employee#2025"}).json()
    claims = TokenService(auth_settings.jwt_secret).verify(body["accessToken"])
    assert (claims.sub, claims.role, claims.login) == (2, 2, "mreyes")
    assert claims.exp - (claims.iat or 0) == 172800
    assert body["expiresIn"] == "2 days"
    assert body["tokenType"] == "Bearer"


def test_without_a_secret_and_with_auth_off_the_token_fields_are_null(auth_client) -> None:
    with auth_client(auth_required=False, jwt_secret="") as client:
        r = client.post("/api/login", json={"username": "admin", "password": "Admin#2025"})
    assert r.status_code == 200
    assert r.json() == {
        "id": 1,
        "first_name": "Dana",
        "last_name": "Whitfield",
        "role": 1,
        "accessToken": None,
        "tokenType": None,
        "expiresIn": None,
    }


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "admin"},
        {"password": "Admin#2025"},
        {"username": "", "password": "x"},
        {"username": "admin", "password": ""},
        {"username": None, "password": "x"},
        {"username": 0, "password": "x"},
        {"username": "admin", "password": False},
    ],
)
def test_a_missing_or_falsy_field_is_400_required(auth_client, body: dict[str, Any]) -> None:
    with auth_client() as client:
        r = client.post("/api/login", json=body)
    assert r.status_code == 400
    assert r.json() == {"error": "Username and password are required"}


@pytest.mark.parametrize(
    "body",
    [
        {"username": {"login": 1}, "password": "x"},  # core bug 9: mysql2 expanded this into SQL
        {"username": ["admin"], "password": "Admin#2025"},
        {"username": "admin", "password": 12345},
        {"username": 1, "password": "Admin#2025"},
        {"username": "   ", "password": "x"},
        {"username": "admin", "password": " \t "},
    ],
)
def test_a_wrong_typed_or_blank_field_is_400_required_not_a_500(auth_client, body: dict[str, Any]) -> None:
    with auth_client() as client:
        r = client.post("/api/login", json=body)
    assert r.status_code == 400
    assert r.json() == {"error": "Username and password are required"}


def test_a_non_json_body_reads_as_empty_and_malformed_json_is_a_json_400(auth_client) -> None:
    with auth_client() as client:
        form = client.post("/api/login", content=b"username=admin", headers={"content-type": "text/plain"})
        array = client.post("/api/login", json=[{"username": "admin", "password": "Admin#2025"}])
        broken = client.post("/api/login", content=b'{"username":', headers={"content-type": "application/json"})
    assert (form.status_code, form.json()) == (400, {"error": "Username and password are required"})
    assert (array.status_code, array.json()) == (400, {"error": "Username and password are required"})
    assert (broken.status_code, broken.json()) == (400, {"error": "Invalid JSON body"})


def test_an_inactive_user_with_the_right_password_is_refused_like_a_wrong_password(auth_client) -> None:
    """Fix 3: tbecker (inactive, legacy plaintext `oldpass`) could log in on the old web login."""
    with auth_client() as client:
        r = client.post("/api/login", json={"username": "tbecker", "password": "oldpass"})
    assert r.status_code == 401
    assert r.json() == {"error": "Invalid username or password"}


def test_an_inactive_users_legacy_password_is_not_upgraded(auth_client, auth_settings) -> None:
    with auth_client() as client:
        client.post("/api/login", json={"username": "tbecker", "password": "oldpass"})
    assert stored_password(auth_settings, 4) == "oldpass"


def test_a_legacy_plaintext_row_becomes_bcrypt_and_still_logs_in(auth_client, auth_settings) -> None:
    assert stored_password(auth_settings, 3) == "legacy123"
    with auth_client() as client:
        first = client.post("/api/login", json={"username": "pnair", "password": "legacy123"})
        upgraded = stored_password(auth_settings, 3)
        again = client.post("/api/login", json={"username": "pnair", "password": "legacy123"})
        wrong = client.post("/api/login", json={"username": "pnair", "password": "legacy124"})
    assert first.status_code == 200
    assert upgraded.startswith("$2a$08$")  # the bcryptjs prefix, at BCRYPT_ROUNDS
    assert len(upgraded) == 60
    assert again.status_code == 200
    assert again.json()["id"] == 3
    assert wrong.status_code == 401


def test_the_legacy_upgrade_publishes_db_changed(auth_client, auth_settings) -> None:
    async def scenario() -> dict[str, Any]:
        r = aioredis.Redis.from_url(auth_settings.redis_url)
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"{auth_settings.redis_prefix}events:db-changed")
        try:
            loop = asyncio.get_running_loop()

            def login() -> int:
                with auth_client() as client:
                    r = client.post("/api/login", json={"username": "pnair", "password": "legacy123"})
                    return int(r.status_code)

            assert await loop.run_in_executor(None, login) == 200
            deadline = loop.time() + 10
            message = None
            while message is None and loop.time() < deadline:  # None also stands for the skipped subscribe reply
                message = await pubsub.get_message(timeout=deadline - loop.time())
            assert message is not None
            event: dict[str, Any] = orjson.loads(message["data"])
            return event
        finally:
            await pubsub.aclose()
            await r.aclose()

    event = asyncio.run(scenario())
    assert event["type"] == "db-changed"
    assert event["reason"] == "pool-query"


def test_a_plain_bcrypt_login_writes_nothing(auth_client, auth_settings) -> None:
    before = stored_password(auth_settings, 1)
    with auth_client() as client:
        assert client.post("/api/login", json={"username": "admin", "password": "Admin#2025"}).status_code == 200
    assert stored_password(auth_settings, 1) == before


def test_the_password_is_trimmed_like_users_endpoints_trim_it(auth_client) -> None:
    """Fix 8: POST /api/users hashes `" pw "` as `"pw"`; typing `" pw "` at login now works."""
    with auth_client() as client:
        r = client.post("/api/login", json={"username": " admin ", "password": "  Admin#2025\n"})
    assert r.status_code == 200
    assert r.json()["id"] == 1


def test_a_hash_of_an_untrimmed_password_written_by_the_old_login_still_matches(auth_client, auth_settings) -> None:
    """The old login upgraded legacy rows with the submitted, untrimmed password."""
    import bcrypt

    spaced = bcrypt.hashpw(b" spaced ", bcrypt.gensalt(4, prefix=b"2a")).decode()
    run_sql(auth_settings, "UPDATE users SET password = %s WHERE id = 2", (spaced,))
    with auth_client() as client:
        exact = client.post("/api/login", json={"username": "mreyes", "password": " spaced "})
        trimmed = client.post("/api/login", json={"username": "mreyes", "password": "spaced"})
    assert exact.status_code == 200
    assert trimmed.status_code == 401


def test_the_login_name_follows_the_column_collation(auth_client) -> None:
    with auth_client() as client:
        r = client.post("/api/login", json={"username": "ADMIN", "password": "Admin#2025"})
    assert r.status_code == 200
    assert r.json()["id"] == 1


def test_passwords_over_72_bytes_use_their_first_72_bytes_like_bcryptjs(auth_client, auth_settings) -> None:
    """The rule: the first 72 bytes of the UTF-8 encoding count (bcryptjs truncated silently; pyca/bcrypt 5
    would raise). So a long password verifies against the old backend's hash of it, and never 500s."""
    import bcrypt

    long_pw = "é" * 40  # 80 bytes; the 72-byte cut falls between two characters' bytes
    stored = bcrypt.hashpw(long_pw.encode()[:72], bcrypt.gensalt(4, prefix=b"2a")).decode()
    run_sql(auth_settings, "UPDATE users SET password = %s WHERE id = 2", (stored,))
    with auth_client() as client:
        full = client.post("/api/login", json={"username": "mreyes", "password": long_pw})
        same_prefix = client.post("/api/login", json={"username": "mreyes", "password": "é" * 36 + "zzzz"})
        huge = client.post("/api/login", json={"username": "mreyes", "password": "x" * 50_000})
    assert full.status_code == 200
    assert same_prefix.status_code == 200
    assert huge.status_code == 401


def test_the_bcryptjs_interop_hash_verifies(auth_client, auth_settings) -> None:
    """interop-vectors.json: a cost-12 `$2a$` hash made by bcryptjs 2.4."""
    vector = "$2a$12$g9.TbVmcC44iXcgmdbEu8OzuERbSdgcVBRDCMZR72C5vGVMtnXoR2"
    run_sql(auth_settings, "UPDATE users SET password = %s WHERE id = 2", (vector,))
    with auth_client() as client:
        ok = client.post("/api/login", json={"username": "mreyes", "password": "Admin#2025"})
    assert ok.status_code == 200
    assert stored_password(auth_settings, 2) == vector  # bcrypt rows are not rewritten


@pytest.mark.parametrize("prefix", ["$2b$", "$2y$"])
def test_2b_and_2y_hashes_verify(auth_client, auth_settings, prefix: str) -> None:
    import bcrypt

    stored = prefix + bcrypt.hashpw(b"Other#1", bcrypt.gensalt(4)).decode()[4:]
    run_sql(auth_settings, "UPDATE users SET password = %s WHERE id = 2", (stored,))
    with auth_client() as client:
        r = client.post("/api/login", json={"username": "mreyes", "password": "Other#1"})
    assert r.status_code == 200


def test_argon2id_opt_in_rehashes_at_the_next_login_and_bcrypt_brings_it_back(auth_client, auth_settings) -> None:
    with auth_client(password_hash="argon2id") as client:
        assert client.post("/api/login", json={"username": "admin", "password": "Admin#2025"}).status_code == 200
        argon = stored_password(auth_settings, 1)
        again = client.post("/api/login", json={"username": "admin", "password": "Admin#2025"})
        wrong = client.post("/api/login", json={"username": "admin", "password": "Admin#2026"})
    assert argon.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert again.status_code == 200
    assert wrong.status_code == 401
    assert stored_password(auth_settings, 1) == argon  # a current argon2id hash is kept
    with auth_client() as client:  # PASSWORD_HASH back to bcrypt: the rollback path
        assert client.post("/api/login", json={"username": "admin", "password": "Admin#2025"}).status_code == 200
    assert stored_password(auth_settings, 1).startswith("$2a$08$")


def test_a_database_outage_is_503_service_unavailable(auth_client) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with auth_client(db_port=port, db_connect_timeout_s=1.0) as client:
        r = client.post("/api/login", json={"username": "admin", "password": "Admin#2025"})
    assert r.status_code == 503
    assert r.json() == {"error": "Service unavailable"}


def test_the_login_path_matches_like_express(auth_client) -> None:
    with auth_client() as client:
        slash = client.post("/api/login/", json={"username": "admin", "password": "Admin#2025"})
        upper = client.post("/API/Login", json={"username": "admin", "password": "Admin#2025"})
        get = client.get("/api/login")
    assert slash.status_code == 200
    assert upper.status_code == 200
    assert get.status_code in (404, 405)
