"""The MySQL pool (asyncmy), opened in a service's lifespan, and the transaction helper every write uses.

`Database.transaction()` commits, then runs the commit hooks (the db-changed publisher and the data version): the
hook fires only after a successful COMMIT, never on a rollback, and never for a read.

The driver is asyncmy (its protocol and row decoding are compiled), measured against aiomysql (pure Python over
PyMySQL) before choosing it: 4x less client CPU per query (issue 15; README "Dependencies and why"). Its errors
are raised as PyMySQL's classes, with PyMySQL's own errno -> class table, so handlers and the error table keep
catching `pymysql.err.*` (PyMySQL stays for migrations and test set-up). The pool is ours, small and strict:
- bounded waits: connecting (`DB_CONNECT_TIMEOUT_MS`) and acquiring (`DB_ACQUIRE_TIMEOUT_MS`); past either, or
  when the server is unreachable, a request gets 503 (`ServiceUnavailable`);
- first come, first served: a released connection goes to the longest waiter, never to a newcomer (aiomysql's
  condition-variable pool lets a newcomer take it ahead of the queue, which is what made our p99 several times
  the old backend's under load);
- a connection that saw a broken link, a cancellation or is left inside a transaction is closed, never reused,
  nor one the server closed while it sat in the pool;
  one older than `RECYCLE_S` is replaced; every session has FOUND_ROWS and `time_zone = '+00:00'`.

`snapshot()` reads several statements in one consistent snapshot and one round trip: `START TRANSACTION WITH
CONSISTENT SNAPSHOT, READ ONLY; q1; ...; qn; ROLLBACK` as one multi-statement query (issue 15: each round trip
costs this process ~60 us of CPU, and a detail page or the desktop bootstrap made 8 and 16 of them); likewise a
transaction's `START TRANSACTION` travels with its first statement. Sessions therefore have
CLIENT_MULTI_STATEMENTS. That does not widen what an injection could do, because nothing request-supplied is
ever part of SQL text: every statement is a named constant with placeholders (ruff's S608
fails the build on string-built SQL), values are escaped by the driver for this session's charset and sql_mode,
and only `snapshot()` and a transaction's first statement join statements, each one mogrified on its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncmy
import asyncmy.errors
import pymysql
from asyncmy.cursors import DictCursor
from pymysql.constants import CLIENT

from ccsm_core.errors import ServiceUnavailable, is_db_unavailable
from ccsm_core.fairness import PoolShare
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.db")

Row = dict[str, Any]
CommitHook = Callable[[str], None]
Args = Sequence[Any] | dict[str, Any]
Statement = tuple[str, Args | None]  # SQL text with placeholders, and its values (None: no placeholders at all)

RECYCLE_S = 3600.0  # as aiomysql's pool_recycle was: well inside MySQL's wait_timeout default (8 h)
SERVER_STATUS_IN_TRANS = 1  # MySQL protocol, server status flags
SNAPSHOT_BEGIN = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"


def _translated(exc: asyncmy.errors.MySQLError) -> pymysql.err.MySQLError:
    """The PyMySQL exception PyMySQL would have raised: by errno for a server error, by class for a client one."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code is not None and not isinstance(exc, asyncmy.errors.InterfaceError):
        cls = pymysql.err.error_map.get(code)
        if cls is None:
            cls = pymysql.err.InternalError if code < 1000 else pymysql.err.OperationalError
    else:
        cls = getattr(pymysql.err, type(exc).__name__, pymysql.err.OperationalError)
    return cls(*exc.args)


class Cursor:
    """A dict cursor whose errors are PyMySQL's (see the module docstring). In a transaction, `START TRANSACTION`
    travels with the first statement, as one multi-statement query: a round trip fewer per write (issue 15)."""

    __slots__ = ("_cur", "begin_pending")

    def __init__(self, cur: Any, begin_pending: bool = False) -> None:
        self._cur = cur
        self.begin_pending = begin_pending

    async def execute(self, sql: str, args: Args | None = None) -> int:
        try:
            if self.begin_pending:
                self.begin_pending = False
                await self._cur.execute("START TRANSACTION;\n" + self._cur.mogrify(sql, args))
                await self._cur.nextset()  # past START TRANSACTION's own result: the statement's (or its error)
                started: int = self._cur.rowcount
                return started
            affected: int = await self._cur.execute(sql, args)
        except asyncmy.errors.MySQLError as exc:
            raise _translated(exc) from None
        return affected

    # Rows are `Row` (dicts); typed Any like the DB-API's, so handlers narrow them where they read them.
    async def fetchone(self) -> Any:
        return await self._cur.fetchone()

    async def fetchall(self) -> Any:
        return await self._cur.fetchall()

    @property
    def lastrowid(self) -> Any:
        return self._cur.lastrowid

    @property
    def rowcount(self) -> int:
        value: int = self._cur.rowcount
        return value

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cur.close()


class Connection:
    """One pooled session: cursors, and the transaction verbs, with PyMySQL's errors."""

    __slots__ = ("_conn", "born")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.born = time.monotonic()

    def cursor(self, begin_pending: bool = False) -> Cursor:
        return Cursor(self._conn.cursor(DictCursor), begin_pending)

    async def _call(self, name: str) -> None:
        try:
            await getattr(self._conn, name)()
        except asyncmy.errors.MySQLError as exc:
            raise _translated(exc) from None

    async def commit(self) -> None:
        await self._call("commit")

    async def rollback(self) -> None:
        await self._call("rollback")

    def in_transaction(self) -> bool:
        return bool(self._conn.server_status & SERVER_STATUS_IN_TRANS)

    async def snapshot(self, statements: Sequence[Statement]) -> list[list[Row]]:
        """The rows of each statement, all read in one consistent snapshot, in one round trip (module docstring).
        A statement that fails stops the rest (the server skips them); the session is then closed rather than
        reused, since its transaction and result stream are in an unknown state."""
        cur = self._conn.cursor(DictCursor)
        try:
            text = ";\n".join([SNAPSHOT_BEGIN, *(cur.mogrify(sql, args) for sql, args in statements), "ROLLBACK"])
            await cur.execute(text)
            results: list[list[Row]] = []
            for _ in statements:
                await cur.nextset()
                results.append(list(await cur.fetchall()))
            await cur.nextset()  # the ROLLBACK's own (empty) result
            await cur.close()
        except asyncmy.errors.MySQLError as exc:
            self._conn.close()
            raise _translated(exc) from None
        except BaseException:
            self._conn.close()
            raise
        return results

    @property
    def usable(self) -> bool:
        # A session the server closed while it sat in the pool (the database restarted, wait_timeout, KILL) would
        # fail its next query with 2006 and cost that request a 503; its transport has already seen the close
        # (aiomysql's pool made the same check: its reader at EOF).
        transport = self._conn._transport
        return (
            bool(self._conn.connected)
            and transport is not None
            and not transport.is_closing()
            and time.monotonic() - self.born < RECYCLE_S
        )

    def close(self) -> None:
        self._conn.close()


class Pool:
    """At most `size` sessions; waiters are served in arrival order (see the module docstring)."""

    def __init__(self, settings: Settings, database: str) -> None:
        self.settings = settings
        self.database = database
        self.size = settings.db_pool_size
        self.opened = 0  # connections open or being opened
        self._free: collections.deque[Connection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self.closed = False
        self.drained = asyncio.Event()  # set once closed with every connection back

    @property
    def freesize(self) -> int:
        return len(self._free)

    def idle(self) -> int:
        """Connections a request could take now without waiting: free ones and slots not yet opened (0 while
        anyone waits)."""
        return 0 if self._waiters else self.size - self.opened + len(self._free)

    async def _connect(self) -> Connection:
        s = self.settings
        try:
            conn = await asyncio.wait_for(
                asyncmy.connect(
                    host=s.db_host,
                    port=s.db_port,
                    user=s.db_user,
                    password=s.db_password,
                    database=self.database or None,
                    autocommit=True,
                    charset="utf8mb4",
                    connect_timeout=s.db_connect_timeout_s,
                    # contract-core §1.5: mysql2 sets FOUND_ROWS, so an UPDATE writing identical values reports 1
                    # matched row and the PUT endpoints answer 200 rather than 404.
                    client_flag=CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,  # snapshot() and a transaction's START
                    init_command="SET time_zone = '+00:00'",
                ),
                s.db_connect_timeout_s,
            )
        except asyncmy.errors.MySQLError as exc:
            raise _translated(exc) from None
        except (OSError, EOFError, RuntimeError) as exc:
            # Refused, unresolvable, unreachable, or reset during the handshake (asyncmy then raises a bare
            # EOFError or "Transport does not expose socket instance"): CR_CONN_HOST_ERROR, as PyMySQL reports it.
            raise pymysql.err.OperationalError(2003, f"Can't connect to MySQL server ({type(exc).__name__})") from None
        return Connection(conn)

    async def acquire(self) -> Connection:
        if self.closed:
            raise ServiceUnavailable()
        while self._free:
            conn = self._free.pop()  # the most recently used: warm, and the idle ones age out
            if conn.usable:
                return conn
            self._discard(conn)
        if self.opened < self.size:
            return await self._open()
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await asyncio.wait_for(waiter, self.settings.db_acquire_timeout_s)
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                got = waiter.result()  # handed over just as the wait ended: give it to the next one
                if got is not None:
                    self.release(got)
                else:
                    self._slot_freed()
            raise
        return handed if handed is not None else await self._open()

    async def _open(self) -> Connection:
        self.opened += 1
        try:
            return await self._connect()
        except BaseException:
            self._slot_freed()
            raise

    def _discard(self, conn: Connection) -> None:
        conn.close()
        self._slot_freed()

    def _slot_freed(self) -> None:
        """One connection fewer: the longest waiter may open its own (`None` handed over)."""
        self.opened -= 1
        if self.closed and self.opened == 0:
            self.drained.set()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.opened += 1
                waiter.set_result(None)
                return

    def release(self, conn: Connection, reusable: bool = True) -> None:
        if not reusable or self.closed or not conn.usable or conn.in_transaction():
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)

    def close(self) -> None:
        self.closed = True
        while self._free:
            self._discard(self._free.pop())
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ServiceUnavailable())
        self._waiters.clear()
        if self.opened == 0:
            self.drained.set()


class Database:
    def __init__(self, settings: Settings, database: str | None = None) -> None:
        self.settings = settings
        self.database = settings.db_name if database is None else database
        self.pool: Pool | None = None
        self._commit_hooks: list[CommitHook] = []
        self.share: PoolShare | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool without connecting: a database that is down must not stop the process starting."""
        self.pool = Pool(self.settings, self.database)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the pool, waiting (bounded) for connections in use to come back; shutdown must never hang on
        a connection a stuck or cancelled task still holds."""
        if self.pool is None:
            return
        pool, self.pool = self.pool, None
        pool.close()  # in-use connections are closed as they come back
        try:
            await asyncio.wait_for(pool.drained.wait(), timeout_s)
        except TimeoutError:
            log.warning("database pool did not drain in time; leaving it", extra={"inUse": pool.opened})

    def on_commit(self, hook: CommitHook) -> None:
        self._commit_hooks.append(hook)

    def idle_connections(self) -> int:
        """`Pool.idle()`, 0 when closed: what the pool could lend a user past their share (ccsm_core.fairness)."""
        return self.pool.idle() if self.pool is not None else 0

    def run_commit_hooks(self, reason: str) -> None:
        for hook in self._commit_hooks:
            try:
                hook(reason)
            except Exception:
                log.exception("commit hook failed")

    # --- connections -----------------------------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection, once the caller's user is within its share of the pool (`share`, issue 12 item 9;
        set by the api service)."""
        async with self.share.admit() if self.share else contextlib.nullcontext(), self._pooled() as conn:
            yield conn

    @asynccontextmanager
    async def _pooled(self) -> AsyncIterator[Connection]:
        pool = self.pool
        if pool is None:
            raise ServiceUnavailable()
        try:
            conn = await pool.acquire()
        except Exception as exc:
            if is_db_unavailable(exc):
                raise ServiceUnavailable() from exc
            raise
        reusable = True
        try:
            yield conn
        except BaseException as exc:
            # A connection that saw a broken link, a cancellation or an open transaction never goes back.
            if is_db_unavailable(exc) or isinstance(exc, asyncio.CancelledError):
                reusable = False
            raise
        finally:
            pool.release(conn, reusable)

    @asynccontextmanager
    async def transaction(self, reason: str = "transaction-commit") -> AsyncIterator[Cursor]:
        """START TRANSACTION (sent with the first statement) ... COMMIT on one pooled connection; ROLLBACK on any
        exception (including early returns via ApiError). The commit hooks run after COMMIT succeeds, so
        db-changed is never sent for a rolled-back write."""
        async with self.connection() as conn:
            try:
                async with conn.cursor(begin_pending=True) as cur:
                    yield cur
                if not cur.begin_pending:  # nothing was sent, so there is nothing to commit
                    await conn.commit()
            except BaseException:
                try:
                    await asyncio.shield(conn.rollback())
                except Exception:
                    conn.close()
                raise
        self.run_commit_hooks(reason)

    # --- one-statement helpers (autocommit) ------------------------------------------------------------------

    async def fetch_all(self, sql: str, args: Args = ()) -> list[Row]:
        async with self.connection() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            rows: list[Row] = await cur.fetchall()
            return rows

    async def fetch_one(self, sql: str, args: Args = ()) -> Row | None:
        async with self.connection() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            row: Row | None = await cur.fetchone()
            return row

    async def execute(self, sql: str, args: Args = (), reason: str = "pool-query") -> int:
        """A single autocommitted write; fires the commit hooks when it affected a row (contract-core §8.6)."""
        async with self.connection() as conn, conn.cursor() as cur:
            affected = await cur.execute(sql, args)
            last_id = cur.lastrowid or 0
        if affected > 0 or last_id > 0:
            self.run_commit_hooks(reason)
        return affected

    async def snapshot(self, statements: Sequence[Statement]) -> list[list[Row]]:
        """`Connection.snapshot` on a pooled connection: several reads that agree with each other, one round trip."""
        async with self.connection() as conn:
            return await conn.snapshot(statements)

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
