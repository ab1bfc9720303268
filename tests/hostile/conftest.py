"""A complete service set (the dev server: every route, every lifespan) on its own scratch database, for
tests that throw hostile input at it and may write anything anywhere."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from ccsm_core import migrations
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.harness import ROOT, ServiceProcess, create_test_database, free_port


@pytest.fixture(scope="package")
def hostile_settings(settings: Settings) -> Iterator[Settings]:
    # Jira configured but unreachable (nothing listens on that port): jira-sync answers 502, as in production
    # when Jira is down; an unconfigured Jira keeps the old backend's documented 500.
    s = dataclasses.replace(
        settings,
        db_name=f"ccsm_hostile_{uuid.uuid4().hex[:10]}",
        redis_prefix=settings.redis_prefix + "hostile:",
        jira_base_url=f"http://127.0.0.1:{free_port()}",
        jira_email="hostile@example.com",
        jira_api_token="not-a-real-token",
    )
    create_test_database(s)
    yield s
    migrations.drop_database(s, s.db_name)


@pytest.fixture(scope="package")
def stack(hostile_settings: Settings) -> Iterator[ServiceProcess]:
    proc = ServiceProcess("devserver", hostile_settings, extra_env={"PYTHONPATH": str(ROOT)}).wait_started()
    yield proc
    assert proc.stop() in (0, 1)


def admin_authorization(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenService(settings.jwt_secret).issue(1, 1, 'admin')}"}


@pytest.fixture
def admin_headers(hostile_settings: Settings) -> dict[str, str]:
    """A token issued as each test starts: a generated request of an earlier test (Schemathesis changing the
    admin's password through PUT /api/users/1) revokes the tokens issued before it (issue 12 item 4)."""
    return admin_authorization(hostile_settings)
