"""The ws-gateway service: `/ws/desktop`, fed by the db-changed channel on Redis."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ccsm_core import service
from ccsm_core.routing import GATEWAY
from ccsm_core.service import ServiceSpec
from ccsm_core.settings import Settings, load_settings


def routes() -> list[BaseRoute]:
    return []


def spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(name=GATEWAY, routes=routes(), ready_checks=frozenset({"redis"}), resources=[service.redis])


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings(GATEWAY)
    return service.build_service_app(
        spec(settings),
        settings,
        startup_lines=[f"WebSocket started on endpoint: ws://{settings.host}:{settings.port}/ws/desktop"],
    )
