"""Versioned, forward-only schema migrations.

Files are `ccsm_core/sql/NNNN_name.sql`, applied in order and recorded in `schema_migrations`. Version 1 is the
baseline (the spec's schema.sql). A production database that predates this service has the baseline tables but
no `schema_migrations`: it is *adopted*, i.e. marked as at the baseline without running it, so its data is never
touched. Later migrations must be additive and backwards compatible (the old backend keeps working on them).

Migrations run only from `make migrate` / `python -m ccsm_core migrate` (and the dev server on a local database);
a `remote` service never migrates implicitly. A named lock serialises concurrent runners (two ECS tasks).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pymysql

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.migrations")

BASELINE_VERSION = 1
# Tables whose presence means "this database already has the baseline schema" (the old backend's core tables).
BASELINE_MARKER_TABLES = ("users", "projects", "users_time_tracking")
LOCK_NAME = "ccsm_schema_migrations"
LOCK_TIMEOUT_S = 60

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INT UNSIGNED NOT NULL,
  name       VARCHAR(200) NOT NULL,
  checksum   CHAR(64)     NOT NULL,
  applied_at DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
  adopted    TINYINT(1)   NOT NULL DEFAULT 0,
  PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files("ccsm_core.sql").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


def split_statements(sql: str) -> list[str]:
    """Split a script on `;` outside quotes and comments (the schema has no procedures or DELIMITER)."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        ch = sql[i]
        if quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < n:
                buf.append(sql[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
            buf.append(ch)
        elif (sql.startswith("--", i) and (i + 2 >= n or sql[i + 2] in " \t\r\n")) or ch == "#":
            end = sql.find("\n", i)
            i = n if end == -1 else end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
            continue
        elif ch == ";":
            stmt = "".join(buf).strip()
            if stmt:
                statements.append(stmt)
            buf = []
        else:
            buf.append(ch)
        i += 1
    tail = "".join(buf).strip()
    if tail:
        statements.append(tail)
    return statements


def _tables(cur: Any) -> set[str]:
    cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
    return {str(row[0]).lower() for row in cur.fetchall()}


def migrate(settings: Settings, database: str | None = None) -> list[str]:
    """Bring the database up to date; returns a line per action taken (also logged)."""
    actions: list[str] = []
    conn = connect_sync(settings, database or settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, LOCK_TIMEOUT_S))
        if cur.fetchone()[0] != 1:
            raise RuntimeError("another migration run holds the lock")
        try:
            tables = _tables(cur)
            cur.execute(CREATE_LEDGER)
            cur.execute("SELECT version, checksum FROM schema_migrations")
            applied = {int(v): str(c) for v, c in cur.fetchall()}
            for m in available():
                if m.version in applied:
                    if applied[m.version] != m.checksum and m.version != BASELINE_VERSION:
                        log.warning("applied migration changed since", extra={"version": m.version})
                    continue
                if (
                    m.version == BASELINE_VERSION
                    and "schema_migrations" not in tables
                    and any(t in tables for t in BASELINE_MARKER_TABLES)
                ):
                    cur.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, adopted) VALUES (%s, %s, %s, 1)",
                        (m.version, m.name, m.checksum),
                    )
                    actions.append(f"adopted existing database at version {m.version} ({m.name})")
                    continue
                for statement in split_statements(m.sql):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
                actions.append(f"applied version {m.version} ({m.name})")
        finally:
            cur.execute("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))
    finally:
        conn.close()
    for line in actions:
        log.info(line)
    return actions


def current_version(settings: Settings, database: str | None = None) -> int:
    conn = connect_sync(settings, database or settings.db_name)
    try:
        cur = conn.cursor()
        try:
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        except pymysql.err.ProgrammingError:
            return 0
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def create_database(settings: Settings, database: str | None = None) -> bool:
    """CREATE DATABASE IF NOT EXISTS; returns True when it was created."""
    name = database or settings.db_name
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", name):
        raise ValueError(f"unsafe database name {name!r}")
    conn = connect_sync(settings)
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (name,))
        exists = cur.fetchone()[0] > 0
        if not exists:
            # A schema name cannot be a bound parameter; it is validated above.
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return not exists
    finally:
        conn.close()


def drop_database(settings: Settings, database: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", database):
        raise ValueError(f"unsafe database name {database!r}")
    conn = connect_sync(settings)
    try:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        conn.close()


def load_script(settings: Settings, sql: str, database: str | None = None) -> int:
    """Run a SQL script (the dev seed) statement by statement; returns how many statements ran."""
    conn = connect_sync(settings, database or settings.db_name)
    try:
        cur = conn.cursor()
        statements = split_statements(sql)
        for statement in statements:
            cur.execute(statement)
        return len(statements)
    finally:
        conn.close()


def is_empty(settings: Settings, database: str | None = None) -> bool:
    """True when the users table has no rows (a fresh database that wants the dev seed)."""
    conn = connect_sync(settings, database or settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM users")
        return int(cur.fetchone()[0]) == 0
    finally:
        conn.close()
