"""Session set-up: this run's own database (migrated, seeded) and Redis prefix, dropped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from ccsm_core import migrations
from ccsm_core.settings import Settings
from tests import harness


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    s = harness.make_settings()
    harness.create_test_database(s)
    yield s
    migrations.drop_database(s, s.db_name)
    client = redis.Redis.from_url(s.redis_url)
    keys = list(client.scan_iter(match=s.redis_prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def fresh_db(settings: Settings) -> Settings:
    """The seed data, reloaded before a test that writes."""
    harness.reseed(settings)
    return settings
