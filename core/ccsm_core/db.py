"""The MySQL pool (aiomysql), opened in a service's lifespan, and the transaction helper every write uses.

`Database.transaction()` commits, then runs the commit hooks (the db-changed publisher and the bootstrap data
version): the hook fires only after a successful COMMIT, never on a rollback, and never for a read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from ccsm_core.errors import ServiceUnavailable, is_db_unavailable
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.db")

Row = dict[str, Any]
CommitHook = Callable[[str], None]


class Database:
    def __init__(self, settings: Settings, database: str | None = None) -> None:
        self.settings = settings
        self.database = settings.db_name if database is None else database
        self.pool: aiomysql.Pool | None = None
        self._commit_hooks: list[CommitHook] = []
        self._lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool without connecting: a database that is down must not stop the process starting."""
        s = self.settings
        self.pool = await aiomysql.create_pool(
            host=s.db_host,
            port=s.db_port,
            user=s.db_user,
            password=s.db_password,
            db=self.database or None,
            minsize=0,
            maxsize=s.db_pool_size,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=s.db_connect_timeout_s,
            # contract-core §1.5: mysql2 sets FOUND_ROWS, so an UPDATE writing identical values reports 1
            # matched row and the PUT endpoints answer 200 rather than 404.
            client_flag=CLIENT.FOUND_ROWS,
            cursorclass=aiomysql.DictCursor,
            pool_recycle=3600,
            init_command="SET time_zone = '+00:00'",
        )

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the pool, waiting (bounded) for connections in use to come back; shutdown must never hang on
        a connection a stuck or cancelled task still holds."""
        if self.pool is None:
            return
        pool, self.pool = self.pool, None
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), timeout_s)
        except TimeoutError:
            log.warning("database pool did not drain in time; terminating", extra={"inUse": pool.size - pool.freesize})
            pool.terminate()

    def on_commit(self, hook: CommitHook) -> None:
        self._commit_hooks.append(hook)

    def run_commit_hooks(self, reason: str) -> None:
        for hook in self._commit_hooks:
            try:
                hook(reason)
            except Exception:
                log.exception("commit hook failed")

    # --- connections -----------------------------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiomysql.Connection]:
        if self.pool is None:
            raise ServiceUnavailable()
        try:
            if self.pool.freesize:
                # A free connection is handed over at once: no timer task for the common case.
                conn = await self.pool.acquire()
            else:
                conn = await asyncio.wait_for(self.pool.acquire(), self.settings.db_acquire_timeout_s)
        except Exception as exc:
            if is_db_unavailable(exc):
                raise ServiceUnavailable() from exc
            raise
        try:
            yield conn
        except BaseException as exc:
            # A connection that saw a broken link, a cancellation or an open transaction never goes back.
            if is_db_unavailable(exc) or isinstance(exc, asyncio.CancelledError) or conn.get_transaction_status():
                conn.close()
            raise
        finally:
            if self.pool is not None:
                self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self, reason: str = "transaction-commit") -> AsyncIterator[aiomysql.Cursor]:
        """BEGIN ... COMMIT on one pooled connection; ROLLBACK on any exception (including early returns via
        ApiError). The commit hooks run after COMMIT succeeds, so db-changed is never sent for a rolled-back
        write."""
        async with self.connection() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    yield cur
                await conn.commit()
            except BaseException:
                try:
                    await asyncio.shield(conn.rollback())
                except Exception:
                    conn.close()
                raise
        self.run_commit_hooks(reason)

    # --- one-statement helpers (autocommit) ------------------------------------------------------------------

    async def fetch_all(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        async with self.connection() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            rows: list[Row] = list(await cur.fetchall())
            return rows

    async def fetch_one(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        async with self.connection() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            row: Row | None = await cur.fetchone()
            return row

    async def execute(self, sql: str, args: Sequence[Any] | dict[str, Any] = (), reason: str = "pool-query") -> int:
        """A single autocommitted write; fires the commit hooks when it affected a row (contract-core §8.6)."""
        async with self.connection() as conn, conn.cursor() as cur:
            affected: int = await cur.execute(sql, args)
            last_id = cur.lastrowid or 0
        if affected > 0 or last_id > 0:
            self.run_commit_hooks(reason)
        return affected

    async def ping(self) -> None:
        """The readiness probe: `SELECT 1` on a pooled connection."""
        async with self.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1 AS ok")
            await cur.fetchone()


def server_connect_kwargs(settings: Settings, database: str | None = None) -> dict[str, Any]:
    """Arguments for a plain synchronous PyMySQL connection (migrations, test set-up, the dev bootstrap)."""
    kwargs: dict[str, Any] = {
        "host": settings.db_host,
        "port": settings.db_port,
        "user": settings.db_user,
        "password": settings.db_password,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": max(1, int(settings.db_connect_timeout_s)),
        "client_flag": CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,
    }
    if database:
        kwargs["database"] = database
    return kwargs


def connect_sync(settings: Settings, database: str | None = None) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(**server_connect_kwargs(settings, database))
