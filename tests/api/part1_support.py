"""What the users/customers/lookups/items/Jira tests share: the reference transcript, tokens for the seed users,
an in-process client, and small database probes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from starlette.testclient import TestClient

from ccsm_api.app import create_app
from ccsm_core.settings import Settings
from tests.api.transcript import EXAMPLES as EXAMPLES
from tests.api.transcript import SEED_USERS as SEED_USERS
from tests.api.transcript import auth as auth
from tests.api.transcript import call as call
from tests.api.transcript import query as query
from tests.api.transcript import replay as replay
from tests.api.transcript import token as token


def expired_auth(settings: Settings, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, who, expires_seconds=60, now=time.time() - 3600)}"}


def fast(settings: Settings, **overrides: Any) -> Settings:
    """The run's settings with cheap bcrypt (the cost is not what these tests are about)."""
    return dataclasses.replace(settings, service="api", bcrypt_rounds=8, **overrides)


@contextmanager
def api(settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(fast(settings, **overrides))) as client:
        yield client


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
