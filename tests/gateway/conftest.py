"""A gateway process shared by this folder's protocol tests (its hub subscribed before any test runs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ccsm_core.settings import Settings
from tests.harness import ServiceProcess, running


@pytest.fixture(scope="module")
def gateway(settings: Settings) -> Iterator[ServiceProcess]:
    with running("ccsm_gateway", settings, extra_env={"LOG_LEVEL": "info"}) as proc:
        proc.wait_for_line("subscribed to db-changed")
        yield proc
