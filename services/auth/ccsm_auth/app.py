"""The auth service: issues tokens (`POST /api/login`, `POST /api/desktop/login-authcode`)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ccsm_core import service
from ccsm_core.routing import AUTH
from ccsm_core.service import ServiceSpec
from ccsm_core.settings import Settings, load_settings


def routes() -> list[BaseRoute]:
    return []


def spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name=AUTH,
        routes=routes(),
        ready_checks=frozenset({"db", "redis"}),
        resources=[service.database, service.redis, service.guard],
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings(AUTH)
    return service.build_service_app(
        spec(settings), settings, startup_lines=[f"Auth HTTP server running on port {settings.port}"]
    )
