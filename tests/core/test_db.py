"""The pool (ccsm_core.db) on the real MariaDB, and its one-round-trip snapshot reads.

A session the server closed while it sat idle in the pool (a restart of the database, `wait_timeout`, `KILL`) is
never handed out again. Found by the compose drill: after the database container was stopped and started, each
such session cost one request a 503."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pymysql
import pytest

from ccsm_core.db import Connection, Database, Pool, Row, connect_sync
from ccsm_core.settings import Settings


def test_a_session_the_server_closed_while_pooled_is_replaced_not_reused(settings: Settings) -> None:
    async def scenario() -> tuple[int, int]:
        pool = Pool(settings, settings.db_name)
        conn = await pool.acquire()
        async with conn.cursor() as cur:
            await cur.execute("SELECT CONNECTION_ID() AS id")
            first = (await cur.fetchone())["id"]
        pool.release(conn)
        killer = pymysql.connect(
            host=settings.db_host, port=settings.db_port, user=settings.db_user, password=settings.db_password
        )
        try:
            killer.cursor().execute(f"KILL {int(first)}")
        finally:
            killer.close()
        deadline = asyncio.get_running_loop().time() + 5
        while conn.usable:  # until the client has seen the server's close (poll, bounded)
            assert asyncio.get_running_loop().time() < deadline, "the pooled session never saw the close"
            await asyncio.sleep(0.01)
        again = await pool.acquire()
        async with again.cursor() as cur:
            await cur.execute("SELECT CONNECTION_ID() AS id")  # raised 2006 'MySQL server has gone away' before
            second = (await cur.fetchone())["id"]
        pool.release(again)
        pool.close()
        return int(first), int(second)

    first, second = asyncio.run(scenario())
    assert second != first


async def _scalar(conn: Connection, sql: str) -> int:
    async with conn.cursor() as cur:
        await cur.execute(sql)
        return int((await cur.fetchone())["value"])


def test_a_snapshot_reads_every_statement_with_its_own_values_inside_one_read_only_transaction(
    settings: Settings,
) -> None:
    hostile = "x'; DROP TABLE users; -- %s \\' ;"

    async def scenario() -> tuple[list[list[Row]], bool, int]:
        pool = Pool(settings, settings.db_name)
        conn = await pool.acquire()
        results = await conn.snapshot(
            [
                ("SELECT %s AS v, %s AS n", (hostile, 7)),
                ("SELECT @@in_transaction AS t", None),
                ("SELECT 'it is 100%' AS literal", None),  # no values: the text is sent as it is
                ("SELECT id FROM users WHERE id IN (%s, %s) ORDER BY id", (1, 2)),
            ]
        )
        after = conn.in_transaction()
        users = await _scalar(conn, "SELECT COUNT(*) AS value FROM users")
        pool.release(conn)
        pool.close()
        return results, after, users

    results, in_transaction_after, users = asyncio.run(scenario())
    assert results == [
        [{"v": hostile, "n": 7}],
        [{"t": 1}],
        [{"literal": "it is 100%"}],
        [{"id": 1}, {"id": 2}],
    ]
    assert in_transaction_after is False
    assert users > 0


def test_a_failed_snapshot_is_a_pymysql_error_and_its_session_is_never_reused(settings: Settings) -> None:
    async def scenario() -> tuple[bool, int, int]:
        pool = Pool(settings, settings.db_name)
        conn = await pool.acquire()
        first = await _scalar(conn, "SELECT CONNECTION_ID() AS value")
        with pytest.raises(pymysql.err.ProgrammingError):
            await conn.snapshot([("SELECT 1 AS one", None), ("SELECT * FROM no_such_table", None)])
        usable = conn.usable
        pool.release(conn)
        again = await pool.acquire()
        second = await _scalar(again, "SELECT CONNECTION_ID() AS value")
        pool.release(again)
        pool.close()
        return usable, first, second

    usable, first, second = asyncio.run(scenario())
    assert usable is False
    assert second != first


@pytest.fixture
def probe_table(settings: Settings) -> Iterator[str]:
    conn = connect_sync(settings, settings.db_name)
    try:
        conn.cursor().execute("CREATE TABLE tx_probe (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20) UNIQUE)")
        yield "tx_probe"
    finally:
        conn.cursor().execute("DROP TABLE IF EXISTS tx_probe")
        conn.close()


def test_a_transactions_first_statement_carries_its_start_and_its_own_results(
    settings: Settings, probe_table: str
) -> None:
    async def scenario() -> tuple[int, int, int, int, list[Row]]:
        db = Database(settings)
        await db.open()
        try:
            async with db.transaction() as cur:
                await cur.execute("SELECT @@in_transaction AS t")  # the first statement, sent with its START
                inside = int((await cur.fetchone())["t"])
            async with db.transaction() as cur:
                inserted = await cur.execute("INSERT INTO tx_probe (v) VALUES (%s), (%s)", ("a", "100%"))
                first_id = int(cur.lastrowid)
            counts: list[int] = []

            async def update_then_fail() -> None:
                async with db.transaction() as cur:
                    counts.append(await cur.execute("UPDATE tx_probe SET v = CONCAT(v, '!')"))
                    raise RuntimeError("rolled back")

            with pytest.raises(RuntimeError):
                await update_then_fail()
            updated = counts[0]
            async with db.connection() as conn, conn.cursor() as cur:
                await cur.execute("SELECT v FROM tx_probe ORDER BY id")
                rows = list(await cur.fetchall())
        finally:
            await db.close()
        return inside, inserted, first_id, updated, rows

    inside, inserted, first_id, updated, rows = asyncio.run(scenario())
    assert (inside, inserted, updated) == (1, 2, 2)
    assert first_id > 0
    assert rows == [{"v": "a"}, {"v": "100%"}]  # the rolled-back UPDATE left nothing


def test_a_failing_first_statement_is_a_pymysql_error_and_leaves_no_transaction_open(
    settings: Settings, probe_table: str
) -> None:
    async def scenario() -> tuple[int, bool]:
        db = Database(settings)
        await db.open()
        try:
            async with db.transaction() as cur:
                await cur.execute("INSERT INTO tx_probe (v) VALUES (%s)", ("dup",))
            with pytest.raises(pymysql.err.IntegrityError):
                async with db.transaction() as cur:
                    await cur.execute("INSERT INTO tx_probe (v) VALUES (%s)", ("dup",))
            async with db.connection() as conn, conn.cursor() as cur:
                await cur.execute("SELECT COUNT(*) AS n FROM tx_probe")
                n = int((await cur.fetchone())["n"])
                open_after = conn.in_transaction()
        finally:
            await db.close()
        return n, open_after

    assert asyncio.run(scenario()) == (1, False)


def test_the_pool_counts_as_idle_its_free_and_unopened_connections_and_none_while_anyone_waits(
    settings: Settings,
) -> None:
    async def scenario() -> list[int]:
        pool = Pool(dataclasses.replace(settings, db_pool_size=2), settings.db_name)
        seen = [pool.idle()]
        first = await pool.acquire()
        seen.append(pool.idle())
        second = await pool.acquire()
        waiter = asyncio.get_running_loop().create_task(pool.acquire())
        for _ in range(100):  # event-loop turns until it queued (no wait for time)
            if pool._waiters:
                break
            await asyncio.sleep(0)
        seen.append(pool.idle())
        pool.release(first)  # handed to the waiter
        third = await waiter
        pool.release(second)
        seen.append(pool.idle())
        pool.release(third)
        seen.append(pool.idle())
        pool.close()
        return seen

    assert asyncio.run(scenario()) == [2, 1, 0, 1, 2]
