"""The api service: every `/api/...` route except the two login endpoints."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ccsm_core import service
from ccsm_core.routing import API
from ccsm_core.service import ServiceSpec
from ccsm_core.settings import Settings, load_settings


def routes() -> list[BaseRoute]:
    return []


def spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name=API,
        routes=routes(),
        ready_checks=frozenset({"db"}),
        resources=[service.database, service.redis, service.change_publisher, service.guard],
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings(API)
    return service.build_service_app(
        spec(settings), settings, startup_lines=[f"API HTTP server running on port {settings.port}"]
    )
