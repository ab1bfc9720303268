"""The error table's database rows, against the real MariaDB: credentials or grants the server refuses, and a
database that does not exist, are a 503 `Service unavailable` on every route (login too: issue 16, it was a 500),
and `/ready` names the kind of refusal without the driver's text."""

from __future__ import annotations

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
from ccsm_core.db import connect_sync
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
        (pymysql.err.OperationalError(1213, "Deadlock found"), None),
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
