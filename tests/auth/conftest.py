"""Auth test fixtures: this run's seeded database, a Redis prefix of each test's own (rate-limit counters never
leak between tests), and cheap bcrypt rounds for hashes the service writes."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from ccsm_auth.app import create_app
from ccsm_auth.limits import LoginLimits
from ccsm_core.settings import Settings

ClientFactory = Callable[..., Any]


@pytest.fixture
def auth_settings(fresh_db: Settings) -> Settings:
    """The seed reloaded (logins upgrade legacy rows), a fresh Redis prefix under the session's, 8 rounds."""
    prefix = f"{fresh_db.redis_prefix}{uuid.uuid4().hex[:8]}:"
    return dataclasses.replace(fresh_db, service="auth", redis_prefix=prefix, bcrypt_rounds=8)


@pytest.fixture
def auth_client(auth_settings: Settings) -> Callable[..., Any]:
    """`with auth_client(**settings_overrides, limits=..., client=(ip, port)) as c:` an in-process auth app."""

    @contextmanager
    def make(
        limits: LoginLimits | None = None, client: tuple[str, int] = ("203.0.113.7", 50000), **overrides: Any
    ) -> Iterator[TestClient]:
        settings = dataclasses.replace(auth_settings, **overrides)
        with TestClient(create_app(settings, limits=limits), client=client) as c:
            yield c

    return make
