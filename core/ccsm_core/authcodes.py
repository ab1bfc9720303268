"""Desktop auth codes (issue 12 item 1): the length policy, the count of active users below it, and the rotation
that gives the users below it fresh random codes.

An auth code alone logs a desktop in (contract-work D1), so its length is what a guessing attacker has to
cover: 3 digits are 1,000 guesses, 6 digits 1,000,000. `AUTHCODE_MIN_LENGTH` (6 outside `local`) applies when a
code is created or changed through `/api/users`; codes that were already shorter are reported (never shown) by
`make audit` and the auth service's start-up log, and replaced by `python -m ccsm_core authcodes rotate-short`.

Rotation: every user whose code is below the policy, active or not (a reactivated user must not bring a short
code back), gets a new code of `AUTHCODE_MIN_LENGTH` random digits (digits: what operators type today), all in
one transaction that locks those rows, unique against every code in the table (and the unique key on the column
as the last word). The codes are printed once and never logged. A changed code is a changed credential: like a
password change, it revokes the user's tokens (`users.tokens_revoked_at`, then the revocation message), and one
`db-changed` tells every desktop to resync.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ccsm_core.db import Database, connect_sync
from ccsm_core.errors import ApiError
from ccsm_core.events import db_changed_frame
from ccsm_core.guard import RECORD_REVOCATION_SQL, publish_revocation, revocation_params, revocation_retention_s
from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings

DIGITS = "0123456789"
ROTATE_REASON = "authcodes-rotated"

COUNT_SHORT_ACTIVE_SQL = (
    "SELECT COUNT(*) AS n FROM users WHERE is_active = 1 AND authcode IS NOT NULL AND CHAR_LENGTH(authcode) < %s"
)
LOCK_SHORT_SQL = (
    "SELECT id, login, is_active FROM users WHERE authcode IS NOT NULL AND CHAR_LENGTH(authcode) < %s "
    "ORDER BY id FOR UPDATE"
)
SELECT_CODES_SQL = "SELECT authcode FROM users WHERE authcode IS NOT NULL"
UPDATE_CODE_SQL = "UPDATE users SET authcode = %s WHERE id = %s"


def too_short(min_length: int) -> str:
    return f"authcode must be at least {min_length} characters"


def check_length(code: str, min_length: int) -> None:
    """A new or changed code below the policy is a 400 with the rule in its message."""
    if min_length and len(code) < min_length:
        raise ApiError(400, too_short(min_length))


async def count_short_active(db: Database, min_length: int) -> int:
    row = await db.fetch_one(COUNT_SHORT_ACTIVE_SQL, (min_length,))
    return int(row["n"]) if row else 0


def count_short_active_sync(settings: Settings) -> int:
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute(COUNT_SHORT_ACTIVE_SQL, (settings.authcode_min_length,))
        row = cur.fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def new_code(length: int, taken: set[str]) -> str:
    """`length` random digits (`secrets`: a CSPRNG), not in `taken` (compared case-folded, like the column)."""
    while True:
        code = "".join(secrets.choice(DIGITS) for _ in range(length))
        if code not in taken:
            return code


@dataclass(frozen=True, slots=True)
class Rotation:
    user_id: int
    login: str
    active: bool
    code: str | None  # None on a dry run


@dataclass(frozen=True, slots=True)
class Rotated:
    users: list[Rotation]
    announced: bool  # the revocations and db-changed reached Redis (False: the processes learn within 30 s)


def rotate_short(settings: Settings, apply: bool) -> Rotated:
    """Every user whose code is shorter than the policy, with a new code when `apply` (committed, then revoked and
    announced); on a dry run the same list without codes, and nothing changes."""
    length = settings.authcode_min_length
    if length == 0:
        return Rotated([], True)
    conn = connect_sync(settings, settings.db_name)
    try:
        conn.begin()
        cur = conn.cursor()
        cur.execute(LOCK_SHORT_SQL, (length,))
        users: list[tuple[Any, ...]] = list(cur.fetchall())
        if not apply:
            conn.rollback()
            return Rotated([Rotation(int(u[0]), str(u[1]), bool(u[2]), None) for u in users], True)
        cur.execute(SELECT_CODES_SQL)
        taken = {str(r[0]).casefold() for r in cur.fetchall()}
        instant_ms = int(time.time() * 1000)
        out = []
        for user_id, login, active in users:
            code = new_code(length, taken)
            taken.add(code)
            cur.execute(UPDATE_CODE_SQL, (code, user_id))
            cur.execute(RECORD_REVOCATION_SQL, revocation_params(int(user_id), instant_ms))
            out.append(Rotation(int(user_id), str(login), bool(active), code))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
    announced = asyncio.run(announce(settings, [r.user_id for r in out], instant_ms)) if out else True
    return Rotated(out, announced)


async def announce(settings: Settings, user_ids: list[int], instant_ms: int) -> bool:
    """After the commit: revoke each user everywhere, and one db-changed so every desktop resyncs. Best effort
    (the database already holds the change; the guard's cache and the column bound what a lost message costs):
    False when Redis could not be told."""
    keyspace = Keyspace(settings)
    try:
        retention_s = revocation_retention_s(settings.jwt_expires_seconds)
        for user_id in user_ids:
            await publish_revocation(keyspace, user_id, retention_s, instant_ms)
        await keyspace.client.publish(keyspace.db_changed_channel, db_changed_frame(ROTATE_REASON))
        return True
    except Exception:
        return False
    finally:
        await keyspace.close()
