"""The pool (ccsm_core.db) on the real MariaDB, and its one-round-trip snapshot reads.

A session the server closed while it sat idle in the pool (a restart of the database, `wait_timeout`, `KILL`) is
never handed out again. Found by the compose drill: after the database container was stopped and started, each
such session cost one request a 503."""

from __future__ import annotations

import asyncio

import pymysql
import pytest

from ccsm_core.db import Connection, Pool, Row
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
