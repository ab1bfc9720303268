"""The auth service: issues tokens (`POST /api/login`, `POST /api/desktop/login-authcode`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ccsm_auth import login
from ccsm_auth.limits import LoginLimiter, LoginLimits
from ccsm_auth.passwords import Passwords
from ccsm_core import authcodes, service
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.routing import AUTH
from ccsm_core.service import ServiceSpec, State, route
from ccsm_core.settings import Settings, load_settings

log = logging.getLogger("ccsm.auth")


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
            limiter = LoginLimiter(state["keyspace"], limits or LoginLimits.from_settings(settings))
            yield {"passwords": passwords, "login_limiter": limiter}
        finally:
            passwords.close()

    return resource


@asynccontextmanager
async def authcode_report(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    """The start-up line of issue 12 item 1: how many active users have a code below AUTHCODE_MIN_LENGTH (never
    the codes). Bounded: an unreachable database delays start-up by at most the ready time-out."""
    minimum = settings.authcode_min_length
    if minimum:
        try:
            count = await asyncio.wait_for(
                authcodes.count_short_active(state["db"], minimum), settings.ready_timeout_ms / 1000
            )
        except Exception as exc:
            log.warning(
                "short auth codes not counted", extra={"event": "auth.authcodes.unchecked", "error": type(exc).__name__}
            )
        else:
            log.log(
                logging.WARNING if count else logging.INFO,
                f"{count} active user(s) with an auth code shorter than AUTHCODE_MIN_LENGTH={minimum}",
                extra={"event": "auth.authcodes.short", "count": count, "minLength": minimum},
            )
    yield {}


def spec(settings: Settings, limits: LoginLimits | None = None) -> ServiceSpec:
    resources: list[service.Resource] = [
        service.database,
        service.redis,
        service.change_publisher,  # the legacy-password upgrade is a write: db-changed, as in the old backend
        service.guard,  # tokens + trusted proxies
        credentials(limits),
        authcode_report,
    ]
    return ServiceSpec(name=AUTH, routes=routes(), ready_checks=frozenset({"db", "redis"}), resources=resources)


def create_app(settings: Settings | None = None, limits: LoginLimits | None = None) -> Starlette:
    settings = settings or load_settings(AUTH)
    return service.build_service_app(
        spec(settings, limits), settings, startup_lines=[f"Auth HTTP server running on port {settings.port}"]
    )
