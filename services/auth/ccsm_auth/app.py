"""The auth service: issues tokens (`POST /api/login`, `POST /api/desktop/login-authcode`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ccsm_auth import login
from ccsm_auth.limits import LoginLimiter, LoginLimits
from ccsm_auth.passwords import Passwords
from ccsm_core import service
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.routing import AUTH
from ccsm_core.service import ServiceSpec, State, route
from ccsm_core.settings import Settings, load_settings


def routes() -> list[BaseRoute]:
    return [
        route("/api/login", login.login, methods=["POST"]),
        route("/api/desktop/login-authcode", login.login_authcode, methods=["POST"]),
    ]


def credentials(limits: LoginLimits | None = None, workers: int | None = None) -> service.Resource:
    """The hashing pool (`passwords`) and the login rate limiter (`login_limiter`); needs `keyspace`."""

    @asynccontextmanager
    async def resource(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
        passwords = Passwords(settings.password_hash, settings.bcrypt_rounds, workers=workers)
        try:
            await passwords.start()
            yield {"passwords": passwords, "login_limiter": LoginLimiter(state["keyspace"], limits)}
        finally:
            passwords.close()

    return resource


def spec(settings: Settings, limits: LoginLimits | None = None) -> ServiceSpec:
    resources: list[service.Resource] = [
        service.database,
        service.redis,
        service.change_publisher,  # the legacy-password upgrade is a write: db-changed, as in the old backend
        service.guard,  # tokens + trusted proxies
        credentials(limits),
    ]
    return ServiceSpec(name=AUTH, routes=routes(), ready_checks=frozenset({"db", "redis"}), resources=resources)


def create_app(settings: Settings | None = None, limits: LoginLimits | None = None) -> Starlette:
    settings = settings or load_settings(AUTH)
    return service.build_service_app(
        spec(settings, limits), settings, startup_lines=[f"Auth HTTP server running on port {settings.port}"]
    )
