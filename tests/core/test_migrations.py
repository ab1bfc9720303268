"""Forward-only migrations: an empty database gets the baseline; an existing production database is adopted
without touching its data; reruns are no-ops; concurrent runners are serialised."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator

import pytest

from ccsm_core import migrations
from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from tests.harness import ROOT

SCHEMA_SQL = ROOT.parent / "shared" / "spec" / "schema.sql"


@pytest.fixture
def scratch(settings: Settings) -> Iterator[Settings]:
    s = dataclasses.replace(settings, db_name=f"ccsm_mig_{uuid.uuid4().hex[:10]}")
    migrations.create_database(s)
    yield s
    migrations.drop_database(s, s.db_name)


def tables(s: Settings) -> set[str]:
    conn = connect_sync(s, s.db_name)
    try:
        cur = conn.cursor()
        cur.execute("SHOW TABLES")
        return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


def test_an_empty_database_gets_the_baseline_schema(scratch: Settings) -> None:
    actions = migrations.migrate(scratch)
    assert actions[0] == "applied version 1 (baseline)"
    found = tables(scratch)
    assert len(found - {"schema_migrations"}) == 27
    assert {"users", "assigments", "users_time_tracking"} <= found
    assert migrations.current_version(scratch) == len(migrations.available())


def test_running_again_changes_nothing(scratch: Settings) -> None:
    migrations.migrate(scratch)
    assert migrations.migrate(scratch) == []


def test_an_existing_production_database_is_adopted_without_touching_its_data(scratch: Settings) -> None:
    # A database made by the old backend's world: the tables exist, with data, and no migration ledger.
    baseline = next(m for m in migrations.available() if m.version == 1)
    migrations.load_script(scratch, baseline.sql)
    conn = connect_sync(scratch, scratch.db_name)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO ref_system_roles (id, name, label) VALUES (1, 'admin', 'Administrator')")
        cur.execute(
            "INSERT INTO users (id, first_name, last_name, login, password, system_role, authcode, is_active) "
            "VALUES (1, 'Ada', 'Admin', 'admin', 'legacy', 1, '555', 1)"
        )
    finally:
        conn.close()

    actions = migrations.migrate(scratch)
    assert actions[0] == "adopted existing database at version 1 (baseline)"
    conn = connect_sync(scratch, scratch.db_name)
    try:
        cur = conn.cursor()
        cur.execute("SELECT login, password FROM users WHERE id = 1")
        assert cur.fetchone() == ("admin", "legacy")
        cur.execute("SELECT adopted FROM schema_migrations WHERE version = 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_concurrent_runners_apply_each_migration_once(scratch: Settings) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrations.migrate(scratch))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    applied = [line for r in results for line in r if line.startswith("applied version 1")]
    assert len(applied) == 1


def test_baseline_is_the_spec_schema_without_its_drop_statements() -> None:
    baseline = next(m for m in migrations.available() if m.version == 1)
    assert "DROP TABLE" not in baseline.sql
    spec_creates = [line for line in SCHEMA_SQL.read_text().splitlines() if line.startswith("CREATE TABLE")]
    assert spec_creates == [line for line in baseline.sql.splitlines() if line.startswith("CREATE TABLE")]


def test_statements_split_outside_quotes_and_comments() -> None:
    sql = "-- a; comment\nINSERT INTO t VALUES ('a;b', \"c;d\");\n/* x; y */ SELECT 1;\n# hash; comment\nSELECT 2"
    assert migrations.split_statements(sql) == ["INSERT INTO t VALUES ('a;b', \"c;d\")", "SELECT 1", "SELECT 2"]


def test_migration_versions_are_contiguous_from_one() -> None:
    versions = [m.version for m in migrations.available()]
    assert versions == list(range(1, len(versions) + 1))
