"""What the users/customers/lookups/items/Jira tests share: the reference transcript, tokens for the seed users,
an in-process client, and small database probes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import redis
from starlette.testclient import TestClient

from ccsm_api.app import create_app
from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.harness import ROOT

EXAMPLES: list[dict[str, Any]] = orjson.loads((ROOT / "fixtures" / "examples.json").read_bytes())

# Seed users (fixtures/seed.sql header): id, role, login.
SEED_USERS = {
    "admin": (1, 1, "admin"),
    "mreyes": (2, 2, "mreyes"),
    "pnair": (3, 2, "pnair"),
    "tbecker": (4, 2, "tbecker"),  # inactive
    "customer": (5, 3, "pwcourt"),
}


def call(endpoint: str, index: int) -> dict[str, Any]:
    """One recorded call of the old backend, e.g. `call("GET /api/users", 0)`."""
    for entry in EXAMPLES:
        if entry["endpoint"] == endpoint:
            recorded: dict[str, Any] = entry["calls"][index]
            return recorded
    raise KeyError(endpoint)


def token(settings: Settings, who: str, expires_seconds: int = 3600, now: float | None = None) -> str:
    user_id, role, login = SEED_USERS[who]
    return TokenService(settings.jwt_secret, expires_seconds=expires_seconds).issue(user_id, role, login, now=now)


def auth(settings: Settings, who: str | None) -> dict[str, str]:
    """Headers for the old transcript's `who` (`admin`, `mreyes`, `customer`, `(no token)`)."""
    if who is None or who == "(no token)":
        return {}
    return {"Authorization": f"Bearer {token(settings, who)}"}


def expired_auth(settings: Settings, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, who, expires_seconds=60, now=time.time() - 3600)}"}


def fast(settings: Settings, **overrides: Any) -> Settings:
    """The run's settings with cheap bcrypt (the cost is not what these tests are about)."""
    return dataclasses.replace(settings, service="api", bcrypt_rounds=8, **overrides)


@contextmanager
def api(settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(fast(settings, **overrides))) as client:
        yield client


def replay(client: TestClient, settings: Settings, endpoint: str, index: int, url: str | None = None) -> None:
    """Send a recorded request and assert the status and body are the recorded ones."""
    rec = call(endpoint, index)
    r = client.request(rec["method"], url or rec["url"], headers=auth(settings, rec["who"]), json=rec["body"])
    assert (r.status_code, r.json()) == (rec["status"], rec["response"]), rec["note"]


def query(settings: Settings, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute(sql, args)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def open_transactions(settings: Settings) -> int:
    """Transactions left open by connections to this run's database (the old POST /api/items leak)."""
    rows = query(
        settings,
        "SELECT COUNT(*) AS n FROM information_schema.innodb_trx t "
        "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id WHERE p.db = %s",
        (settings.db_name,),
    )
    return int(rows[0]["n"])


@contextmanager
def channel(settings: Settings, name: str) -> Iterator[redis.client.PubSub]:
    """A subscription to one of this run's Redis channels (`events:db-changed`, `events:revocations`)."""
    client = redis.Redis.from_url(settings.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(settings.redis_prefix + name)
    try:
        yield pubsub
    finally:
        pubsub.close()
        client.close()


def next_message(pubsub: redis.client.PubSub, timeout: float = 5.0) -> bytes | None:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if message is not None and message["type"] == "message":
            data: bytes = message["data"]
            return data
    return None
