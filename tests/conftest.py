"""Session set-up: this run's own database (migrated, seeded) and Redis prefix, dropped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ccsm_core.settings import Settings
from tests import harness


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    s = harness.make_settings()
    harness.create_test_database(s)
    yield s
    harness.drop_run_data(s)


@pytest.fixture
def fresh_db(settings: Settings) -> Settings:
    """The seed data, reloaded before a test that writes."""
    harness.reseed(settings)
    return settings
