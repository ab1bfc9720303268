"""The ws-gateway service: `/ws/desktop`, fed by the db-changed channel on Redis. Its only dependency is Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute

from ccsm_core import service
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.routing import GATEWAY
from ccsm_core.service import ServiceSpec, State
from ccsm_core.settings import Settings, load_settings
from ccsm_core.tokens import TokenService
from ccsm_gateway.desktop_socket import ENDPOINT, DesktopSocket
from ccsm_gateway.hub import Hub


def routes() -> list[BaseRoute]:
    # Exactly `/ws/desktop` (contract-core §8.7: no trailing slash; other upgrade paths are refused).
    return [WebSocketRoute(ENDPOINT, DesktopSocket())]


@asynccontextmanager
async def hub(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    """The process's one Redis subscription and its sockets (needs `keyspace`)."""
    the_hub = Hub(settings, state["keyspace"])
    await the_hub.start()
    tokens = state.get("tokens") or TokenService(
        settings.jwt_secret, settings.jwt_secret_previous, settings.jwt_expires_seconds
    )
    try:
        yield {"hub": the_hub, "tokens": tokens}
    finally:
        await the_hub.close()


def spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(name=GATEWAY, routes=routes(), ready_checks=frozenset({"redis"}), resources=[service.redis, hub])


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings(GATEWAY)
    return service.build_service_app(
        spec(settings),
        settings,
        startup_lines=[f"WebSocket started on endpoint: ws://{settings.host}:{settings.port}/ws/desktop"],
    )
