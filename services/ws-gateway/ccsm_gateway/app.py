"""The ws-gateway service: `/ws/desktop`, fed by the db-changed channel on Redis. Its only dependency is Redis."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute

from ccsm_core import service
from ccsm_core.db import Database
from ccsm_core.edge import TrustedProxies
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.metrics import OPEN_SOCKETS, SLOW_CONSUMER_CLOSES, Metrics
from ccsm_core.routing import GATEWAY
from ccsm_core.service import ServiceSpec, State
from ccsm_core.settings import Settings, load_settings
from ccsm_core.tokens import TokenService
from ccsm_gateway.desktop_socket import ENDPOINT, DesktopSocket
from ccsm_gateway.hub import Hub
from ccsm_gateway.transport import Gateway
from ccsm_gateway.users import UserChecks, read_users


def routes() -> list[BaseRoute]:
    # Exactly `/ws/desktop` (contract-core §8.7: no trailing slash; other upgrade paths are refused).
    return [WebSocketRoute(ENDPOINT, DesktopSocket())]


@asynccontextmanager
async def hub(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    """The process's one Redis subscription and its sockets (needs `keyspace`), and, with auth on and a database
    in the state, the periodic check of the connected users (`ccsm_gateway.users`)."""
    metrics: Metrics = state["metrics"]
    the_hub = Hub(settings, state["keyspace"], metrics=metrics)
    metrics.gauge(OPEN_SOCKETS, lambda: len(the_hub.clients))
    metrics.counter(SLOW_CONSUMER_CLOSES, lambda: the_hub.slow_closed)
    await the_hub.start()
    tokens = state.get("tokens") or TokenService(
        settings.jwt_secret, settings.jwt_secret_previous, settings.jwt_expires_seconds
    )
    db: Database | None = state.get("db")
    checks: UserChecks | None = None
    if settings.auth_required and db is not None:
        checks = UserChecks(
            functools.partial(read_users, db),
            the_hub.by_user.keys,
            the_hub.apply_user_records,
            settings.ws_user_check_s,
        )
        checks.start()
    proxies = state.get("proxies") or TrustedProxies(settings.trusted_proxies)
    gateway = Gateway(the_hub, tokens, settings, proxies, checks)
    try:
        yield {"hub": the_hub, "tokens": tokens, "users": checks, "proxies": proxies, "gateway": gateway}
    finally:
        gateway.close()
        if checks is not None:
            await checks.close()
        await the_hub.close()


def spec(settings: Settings) -> ServiceSpec:
    # MySQL is read by the user checks only, and they fail open: /ready stays Redis-only (see ccsm_gateway.users).
    return ServiceSpec(
        name=GATEWAY,
        routes=routes(),
        ready_checks=frozenset({"redis"}),
        resources=[service.redis, service.database, hub],
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings(GATEWAY)
    app = service.build_service_app(
        spec(settings),
        settings,
        startup_lines=[f"WebSocket started on endpoint: ws://{settings.host}:{settings.port}/ws/desktop"],
    )
    return app
