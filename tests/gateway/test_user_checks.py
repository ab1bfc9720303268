"""The gateway re-reads its connected users from MySQL (issue 12 items 4 and 5): a user deactivated directly in the
database, with no revocation message, loses its sockets within the check interval; a token issued before the
user's `tokens_revoked_at` is closed and cannot open a socket again (durably: no Redis record is involved); one
query serves every connected user and every upgrade of a loop turn; MySQL down means fail open, said once."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Iterable, Iterator

import httpx
import pytest

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from ccsm_gateway.users import UNKNOWN, UserChecks, UserRecord
from tests.gateway.wsclient import close_code, open_socket, opened, recv_type, token_for
from tests.harness import ServiceProcess, free_port, running

CHECK_ENV = {"WS_USER_CHECK_MS": "1000", "LOG_LEVEL": "info"}


def set_user(settings: Settings, user_id: int, **columns: object) -> None:
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        for column, value in columns.items():
            assert column in ("is_active", "tokens_revoked_at")
            cur.execute(f"UPDATE users SET {column} = %s WHERE id = %s", (value, user_id))  # noqa: S608
    finally:
        conn.close()


@pytest.fixture
def restored(fresh_db: Settings) -> Iterator[Settings]:
    """The seed's users; whatever a test changes on users 2 and 3 is put back afterwards."""
    yield fresh_db
    for user in (2, 3):
        set_user(fresh_db, user, is_active=1, tokens_revoked_at=None)


async def attempt(proc: ServiceProcess, token: str) -> tuple[list[str | bytes], tuple[int | None, str]]:
    """What a new socket receives before it closes (nothing at all when refused at the upgrade), and its close."""
    frames: list[str | bytes] = []
    async with await open_socket(proc, token) as ws:
        code = await close_code(ws)
        return frames, code


async def pong(proc: ServiceProcess, token: str) -> str:
    async with await opened(proc, token) as ws:
        await ws.send('{"type":"ping"}')
        return str((await recv_type(ws, "pong"))["type"])


# --- against a real gateway process and MySQL -------------------------------------------------------------------


@pytest.mark.slow
def test_a_user_deactivated_directly_in_the_database_loses_its_sockets_within_the_check_interval(
    restored: Settings,
) -> None:
    async def scenario() -> tuple[tuple[int | None, str], float, str, tuple[int | None, str]]:
        async with (
            await opened(gw, token_for(restored, user_id=3)) as victim,
            await opened(gw, token_for(restored, user_id=2)) as bystander,
        ):
            set_user(restored, 3, is_active=0)  # no revocation message: only the database knows
            started = time.monotonic()
            closed = await close_code(victim, within=10)
            took = time.monotonic() - started
            await bystander.send('{"type":"ping"}')
            still = str((await recv_type(bystander, "pong"))["type"])
        _, again = await attempt(gw, token_for(restored, user_id=3))
        return closed, took, still, again

    with running("ccsm_gateway", restored, CHECK_ENV) as gw:
        closed, took, still, again = asyncio.run(scenario())
    assert closed == (4401, "Unauthorized")
    assert took < 5  # one interval (1 s here, 15 s by default) plus the query
    assert still == "pong"
    assert again == (4401, "Unauthorized")


@pytest.mark.slow
def test_a_token_issued_before_tokens_revoked_at_is_closed_and_refused_while_newer_ones_connect(
    restored: Settings,
) -> None:
    now = time.time()
    revoked_at = math.floor(now) - 30 + 0.5
    old = token_for(restored, user_id=2, now=now - 60)
    just_before = token_for(restored, user_id=2, now=revoked_at - 0.3)  # same second, 300 ms earlier (iat_ms)
    just_after = token_for(restored, user_id=2, now=revoked_at + 0.3)  # same second, a login right after it

    async def scenario() -> tuple[tuple[int | None, str], tuple[int | None, str], tuple[int | None, str], str]:
        async with await opened(gw, old) as connected:
            when = dt.datetime.fromtimestamp(revoked_at, dt.UTC).replace(tzinfo=None)
            set_user(restored, 2, tokens_revoked_at=when)  # as a password change records it, without Redis
            closed = await close_code(connected, within=10)
        _, refused = await attempt(gw, old)
        _, before = await attempt(gw, just_before)
        return closed, refused, before, await pong(gw, just_after)

    with running("ccsm_gateway", restored, CHECK_ENV) as gw:
        closed, refused, before, after = asyncio.run(scenario())
    assert closed == (4401, "Unauthorized")
    assert refused == (4401, "Unauthorized")
    assert before == (4401, "Unauthorized")  # iat_ms decides within the second (ccsm_core.tokens.issued_before)
    assert after == "pong"


@pytest.mark.slow
def test_with_mysql_unreachable_sockets_open_and_stay_and_one_warning_says_so(settings: Settings) -> None:
    async def scenario() -> tuple[str, str]:
        async with await opened(gw, token_for(settings, user_id=2)) as ws:
            gw.wait_for_line("user check failed")
            await ws.send('{"type":"ping"}')
            first = str((await recv_type(ws, "pong"))["type"])
            return first, await pong(gw, token_for(settings, user_id=3))

    with running("ccsm_gateway", settings, {**CHECK_ENV, "DB_PORT": str(free_port())}) as gw:
        first, second = asyncio.run(scenario())
        ready = httpx.get(f"{gw.base_url}/ready", timeout=5)
    assert (first, second) == ("pong", "pong")
    assert ready.status_code == 200  # the gateway's readiness is Redis's
    assert sum("user check failed" in line for line in gw.lines) == 1


# --- the checker on its own -------------------------------------------------------------------------------------


class FakeUsers:
    """A reader over a dict of users that counts its queries, and can be made to fail."""

    def __init__(self, users: dict[int, UserRecord]) -> None:
        self.users = users
        self.queries: list[list[int]] = []
        self.failing = False

    async def __call__(self, ids: Iterable[int]) -> dict[int, UserRecord]:
        wanted = list(ids)
        self.queries.append(sorted(wanted))
        if self.failing:
            raise ConnectionRefusedError
        return {i: self.users[i] for i in wanted if i in self.users}


def test_upgrades_in_one_turn_of_the_loop_share_one_query_and_answers_are_kept_for_an_interval() -> None:
    async def scenario() -> tuple[list[object], list[list[int]], object]:
        reader = FakeUsers({2: UserRecord(True, None), 3: UserRecord(False, None)})
        checks = UserChecks(reader, lambda: [], lambda users, records: 0, interval_s=60)
        answers = await asyncio.gather(*(checks.lookup(u) for u in (2, 3, 2, 9)))
        again = await checks.lookup(3)
        await checks.close()
        return list(answers), reader.queries, again

    answers, queries, again = asyncio.run(scenario())
    assert answers == [UserRecord(True, None), UserRecord(False, None), UserRecord(True, None), None]
    assert queries == [[2, 3, 9]]
    assert again == UserRecord(False, None)


def test_a_failing_database_is_answered_unknown_warned_once_and_not_asked_again_within_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[list[object], int, int]:
        reader = FakeUsers({})
        reader.failing = True
        applied: list[int] = []
        checks = UserChecks(reader, lambda: [2, 3], lambda users, records: applied.append(1) or 0, interval_s=60)
        closed = await checks.check_now()
        answers = [await checks.lookup(2), await checks.lookup(4)]
        await checks.check_now()
        await checks.close()
        return answers, len(reader.queries), closed + len(applied)

    with caplog.at_level(logging.INFO, logger="ccsm.gateway"):
        answers, queries, touched = asyncio.run(scenario())
    assert answers == [UNKNOWN, UNKNOWN]
    assert queries == 2  # the two periodic checks; the upgrades did not wait for a database known to be down
    assert touched == 0  # no socket was closed for it
    assert [r.message for r in caplog.records].count(
        "user check failed: MySQL unreachable; sockets are kept and upgrades decided without it"
    ) == 1
