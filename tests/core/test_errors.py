"""The error table's database rows, against the real MariaDB: credentials or grants the server refuses, and a
database that does not exist, are a 503 `Service unavailable` on every route (login too: issue 16, it was a 500),
and `/ready` names the kind of refusal without the driver's text."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from starlette.testclient import TestClient

from ccsm_api.app import create_app as api_app
from ccsm_auth.app import create_app as auth_app
from ccsm_core.db import Database, connect_sync
from ccsm_core.errors import ServiceUnavailable, classify, db_unavailable_kind, unavailability_kind
from ccsm_core.settings import Settings
from tests.api.transcript import auth
from tests.harness import ADMIN

UNAVAILABLE = {"error": "Service unavailable"}


@pytest.fixture
def stranger(settings: Settings) -> Iterator[tuple[str, str]]:
    """A real MariaDB account of this run (name, password) with no grant on anything, dropped afterwards."""
    name, password = f"ccsm_stranger_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    conn = connect_sync(settings)
    try:
        conn.cursor().execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (name, password))
        conn.cursor().execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (name, password))
        yield name, password
    finally:
        conn.cursor().execute("DROP USER IF EXISTS %s@'127.0.0.1', %s@'localhost'", (name, name))
        conn.close()


def grant(settings: Settings, sql: str, name: str) -> None:
    conn = connect_sync(settings)
    try:
        conn.cursor().execute(sql.format(db=settings.db_name), (name,))
    finally:
        conn.close()


def answers(settings: Settings) -> dict[str, Any]:
    """What a client sees from both services: login, a protected api route, and each service's /ready."""
    with TestClient(auth_app(dataclasses.replace(settings, service="auth", bcrypt_rounds=8))) as client:
        login = client.post("/api/login", json=ADMIN)
        auth_ready = client.get("/ready")
    with TestClient(api_app(dataclasses.replace(settings, service="api"))) as client:
        projects = client.get("/api/projects", headers=auth(settings, "admin"))
        api_ready = client.get("/ready")
    for r in (login, auth_ready, projects, api_ready):
        assert "access denied" not in r.text.lower()  # no driver text
        assert "unknown database" not in r.text.lower()
        assert settings.db_user not in r.text
    return {
        "login": (login.status_code, login.json()),
        "projects": (projects.status_code, projects.json()),
        "ready": {(r.status_code, r.json().get("reason")) for r in (auth_ready, api_ready)},
    }


def test_a_wrong_password_for_a_real_user_is_503_everywhere_and_ready_says_access_denied(settings: Settings) -> None:
    refused = dataclasses.replace(settings, db_password="not-" + secrets.token_urlsafe(12))
    assert answers(refused) == {
        "login": (503, UNAVAILABLE),
        "projects": (503, UNAVAILABLE),
        "ready": {(503, "db-access-denied")},
    }


def test_an_account_without_access_to_the_database_is_503_and_ready_says_access_denied(
    settings: Settings, stranger: tuple[str, str]
) -> None:
    name, password = stranger
    refused = dataclasses.replace(settings, db_user=name, db_password=password)  # 1044: no grant on the database
    assert answers(refused) == {
        "login": (503, UNAVAILABLE),
        "projects": (503, UNAVAILABLE),
        "ready": {(503, "db-access-denied")},
    }


def test_a_missing_table_grant_is_503_not_500(settings: Settings, stranger: tuple[str, str]) -> None:
    name, password = stranger
    # The account may use the database (one table), so SELECT 1 and /ready pass; the users table is refused (1142).
    for host in ("127.0.0.1", "localhost"):
        grant(settings, f"GRANT SELECT ON `{{db}}`.`schema_migrations` TO %s@'{host}'", name)
    limited = dataclasses.replace(settings, db_user=name, db_password=password)
    assert answers(limited) == {
        "login": (503, UNAVAILABLE),
        "projects": (503, UNAVAILABLE),
        "ready": {(200, None)},
    }


def test_a_database_that_does_not_exist_is_503_and_ready_says_unknown_database(settings: Settings) -> None:
    missing = dataclasses.replace(settings, db_name=f"ccsm_missing_{uuid.uuid4().hex[:8]}")
    assert answers(missing) == {
        "login": (503, UNAVAILABLE),
        "projects": (503, UNAVAILABLE),
        "ready": {(503, "db-unknown-database")},
    }


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (pymysql.err.OperationalError(1045, "Access denied for user"), "access-denied"),
        (pymysql.err.OperationalError(1044, "Access denied for user to database"), "access-denied"),
        (pymysql.err.OperationalError(1142, "SELECT command denied"), "access-denied"),
        (pymysql.err.InternalError(1049, "Unknown database"), "unknown-database"),
        (pymysql.err.OperationalError(1040, "Too many connections"), "too-many-connections"),
        (pymysql.err.OperationalError(2003, "Can't connect"), "unreachable"),
        (pymysql.err.InterfaceError(0, ""), "unreachable"),
        (ConnectionResetError(), "unreachable"),
        (pymysql.err.IntegrityError(1062, "Duplicate entry"), None),
        (pymysql.err.OperationalError(1054, "Unknown column"), None),
        (ValueError("a bug"), None),
    ],
)
def test_each_database_error_is_classified_by_its_number(exc: BaseException, kind: str | None) -> None:
    assert db_unavailable_kind(exc) == kind
    assert classify(exc)[:2] == ((503, "Service unavailable") if kind else (500, "Internal server error"))


def test_the_kind_is_found_behind_the_service_unavailable_raised_from_it() -> None:
    wrapped = ServiceUnavailable()
    wrapped.__cause__ = pymysql.err.OperationalError(1045, "Access denied")  # `raise ServiceUnavailable() from exc`
    assert unavailability_kind(wrapped) == "access-denied"
    assert unavailability_kind(TimeoutError()) == "unreachable"


def test_a_lock_wait_timeout_on_the_real_server_is_a_503_with_retry_after(fresh_db: Settings) -> None:
    """A write that waits too long for a row another session holds: the server's 1205, through our pool, is a
    retryable 503, not a 500 (lock waits and deadlocks roll back, so nothing was written)."""
    holder = connect_sync(fresh_db, fresh_db.db_name)
    try:
        cur = holder.cursor()
        cur.execute("BEGIN")
        cur.execute("SELECT id FROM customers WHERE id = 1 FOR UPDATE")

        async def contend() -> BaseException:
            db = Database(fresh_db)
            await db.open()
            try:
                async with db.transaction() as tx:
                    await tx.execute("SET SESSION innodb_lock_wait_timeout = 1")
                    await tx.execute("UPDATE customers SET name = name WHERE id = 1")
            except Exception as exc:
                return exc
            finally:
                await db.close()
            raise AssertionError("the update did not wait for the held row lock")

        exc = asyncio.run(contend())
    finally:
        holder.rollback()
        holder.close()
    assert isinstance(exc, pymysql.err.MySQLError)
    assert exc.args[0] == 1205
    assert classify(exc) == (503, "Service unavailable", {"Retry-After": "1"})


def test_a_deadlock_is_a_503_with_retry_after() -> None:
    deadlock = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
    assert classify(deadlock) == (503, "Service unavailable", {"Retry-After": "1"})
    assert db_unavailable_kind(deadlock) is None  # the connection is fine: it goes back to the pool
