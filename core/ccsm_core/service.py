"""How a service is assembled: its routes, its resources (entered in the lifespan) and the shared edge.

Every service's `create_app(settings=None)` calls `build_app`; the dev server calls `compose` to serve the routes
of all three services in one process, with every service's resources entered (mounting sub-apps would skip
their lifespans, so routes are concatenated instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send

from ccsm_core import lifecycle as ops
from ccsm_core.db import Database
from ccsm_core.edge import EdgeMiddleware, TrustedProxies
from ccsm_core.errors import ApiError, classify, error_response
from ccsm_core.events import ChangePublisher
from ccsm_core.guard import Guard, RevocationListener, UserStateCache
from ccsm_core.keyspace import Keyspace
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.metrics import Metrics, flushing
from ccsm_core.response_cache import PER_USER, UNCACHED, Caller, DataVersion, ResponseCache, cached
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService

log = logging.getLogger("ccsm.service")
RESOURCE_CLOSE_TIMEOUT_S = 10.0

State = dict[str, Any]
# A resource opens in the lifespan, may read what earlier resources put in the state, and yields its own part.
Resource = Callable[[Settings, Lifecycle, State], AbstractAsyncContextManager[State]]


@dataclass
class ServiceSpec:
    name: str
    routes: list[BaseRoute]
    resources: list[Resource] = field(default_factory=list)
    ready_checks: frozenset[str] = frozenset()  # names of the checks /ready runs ("db", "redis")


def route(
    path: str, endpoint: Callable[..., Any], methods: Sequence[str] = ("GET",), cache: Caller = PER_USER
) -> Route:
    """A route matched like Express 4 (contract-core §1.3): case-insensitive, with an optional trailing slash.

    A GET route is served through the response cache (`response_cache`) when its service has one; `cache` says
    what of the caller its answer depends on: `PER_USER` unless declared otherwise, `PER_ROLE` for an answer that
    is the same for every caller it admits, `UNCACHED` for a public route or one with a cache of its own."""
    if "GET" in methods:
        endpoint = cached(endpoint, cache)
    r = Route(path, endpoint, methods=list(methods))
    pattern = r.path_regex.pattern
    assert pattern.endswith("$")
    r.path_regex = re.compile(pattern[:-1] + "/?$", re.IGNORECASE)
    return r


class PrefixRouter(Router):
    """Starlette's router (every route tried in order, the first full match wins, else the first partial one: 405),
    with one cheap test before each route's regex: a route whose template's literal beginning does not begin the
    request path cannot match it, so its regex is not run (issue 15: a profile put ~6 % of a request's CPU in
    trying the api's ~50 routes one by one). The test is exact: templates are ASCII and their regexes anchored and
    case-insensitive, so for an ASCII path, lower-casing both sides loses nothing; any other path, a route of
    another kind, a mounted app (`root_path`) and anything but HTTP take Starlette's own loop."""

    def _prefixes(self) -> list[str | None]:
        if getattr(self, "_prefix_of", None) is None or len(self._prefix_of) != len(self.routes):
            self._prefix_of: list[str | None] = [
                r.path.split("{", 1)[0].lower() if type(r) is Route and r.path.isascii() else None for r in self.routes
            ]
        return self._prefix_of

    def candidates(self, path: str) -> list[BaseRoute]:
        """The routes that may match `path`, in order (every route for a non-ASCII path)."""
        if not path.isascii():
            return list(self.routes)
        lowered = path.lower()
        return [r for r, p in zip(self.routes, self._prefixes(), strict=True) if p is None or lowered.startswith(p)]

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.redirect_slashes or scope.get("root_path"):
            await super().app(scope, receive, send)
            return
        scope.setdefault("router", self)
        partial: BaseRoute | None = None
        partial_scope: Scope = {}
        for candidate in self.candidates(scope["path"]):
            match, child_scope = candidate.matches(scope)
            if match is Match.FULL:
                scope["route"] = candidate
                scope.update(child_scope)
                await candidate.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial, partial_scope = candidate, child_scope
        if partial is not None:  # "405 Method Not Allowed", as Starlette's
            scope["route"] = partial
            scope.update(partial_scope)
            await partial.handle(scope, receive, send)
            return
        await self.default(scope, receive, send)


def ops_routes() -> list[BaseRoute]:
    return [route("/health", ops.health, cache=UNCACHED), route("/ready", ops.ready, cache=UNCACHED)]


# --- shared resources ------------------------------------------------------------------------------------------


@asynccontextmanager
async def database(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    db = Database(settings)
    await db.open()
    lifecycle.add_check("db", db.ping)
    try:
        await db.ping()
        log.info(f"Connected DB: {settings.db_host}:{settings.db_port}/{settings.db_name}")
    except Exception as exc:
        # Not fatal: /ready reports it and the pool reconnects when the database returns.
        log.warning("database not reachable at start-up", extra={"error": type(exc).__name__})
    try:
        yield {"db": db}
    finally:
        await db.close()


@asynccontextmanager
async def redis(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    keyspace = Keyspace(settings)
    lifecycle.add_check("redis", keyspace.ping)
    try:
        yield {"keyspace": keyspace}
    finally:
        await keyspace.close()


@asynccontextmanager
async def change_publisher(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    """Wires the database's commit hook to the db-changed publisher (needs `db` and `keyspace`)."""
    publisher = ChangePublisher(state["keyspace"])
    db: Database = state["db"]
    db.on_commit(publisher.mark)
    try:
        yield {"publisher": publisher}
    finally:
        await publisher.close()


@asynccontextmanager
async def guard(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    tokens = TokenService(settings.jwt_secret, settings.jwt_secret_previous, settings.jwt_expires_seconds)
    users = UserStateCache(state["db"])
    listening = settings.auth_required and "keyspace" in state  # revocations reach this process at once
    async with RevocationListener(state["keyspace"], users) if listening else contextlib.nullcontext() as listener:
        yield {
            "tokens": tokens,
            "guard": Guard(tokens, users, settings.auth_required),
            "proxies": TrustedProxies(settings.trusted_proxies),
            "revocations": listener,
        }


@asynccontextmanager
async def response_cache(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    """The data version (moved by every commit, needs `db` and `keyspace`) and the response cache keyed by it."""
    version = DataVersion(state["keyspace"])
    db: Database = state["db"]
    db.on_commit(version.on_commit)
    responses = ResponseCache(version, settings.response_cache, settings.response_cache_max_bytes)
    yield {"data_version": version, "responses": responses}


# --- assembly ---------------------------------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    status, message, headers = classify(exc)
    return error_response(status, message, headers)


def build_app(
    settings: Settings,
    routes: list[BaseRoute],
    resources: Sequence[Resource],
    ready_checks: frozenset[str] | None = None,
    lifecycle: Lifecycle | None = None,
    startup_lines: Sequence[str] = (),
) -> Starlette:
    lc = lifecycle or Lifecycle(settings.service, ready_timeout_s=settings.ready_timeout_ms / 1000)
    lc.required = ready_checks
    metrics = Metrics(settings.service, settings.metrics_namespace, settings.metrics_interval_s)

    async def ready() -> bool | None:
        if lc.shutting_down:
            return None  # a draining task is not-ready by design: no datapoint for the /ready alarm
        status, _ = await lc.readiness()
        return status == 200

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        state: State = {"lifecycle": lc, "settings": settings, "metrics": metrics}
        stack = AsyncExitStack()
        try:
            metrics.readiness(ready)
            stack.push_async_callback(await flushing(metrics))  # closed last: the final flush sees everything
            for resource in resources:
                state.update(await stack.enter_async_context(resource(settings, lc, state)))
            if settings.use_helmet:
                log.info("[security] Helmet enabled (USE_HELMET=true).")
            yield state
            log.info("closing resources")
        finally:
            # Bounded: the process must reach its exit code even if a resource will not close.
            try:
                await asyncio.wait_for(stack.aclose(), RESOURCE_CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.error("resources did not close in time", extra={"timeoutS": RESOURCE_CLOSE_TIMEOUT_S})

    app = Starlette(
        routes=routes,
        middleware=[Middleware(EdgeMiddleware, settings=settings, metrics=metrics)],
        exception_handlers={HTTPException: _api_error, ApiError: _api_error},
        lifespan=lifespan,
    )
    # contract-core §1.3: no 307 on a trailing slash.
    app.router = PrefixRouter(routes, redirect_slashes=False, lifespan=lifespan)
    app.state.lifecycle = lc
    app.state.settings = settings
    app.state.startup_lines = tuple(startup_lines)  # logged by the server once its socket is bound (issue 16)
    return app


def build_service_app(spec: ServiceSpec, settings: Settings, startup_lines: Sequence[str] = ()) -> Starlette:
    """One service on its own: its routes, then its own /health and /ready."""
    return build_app(
        settings,
        spec.routes + ops_routes(),
        spec.resources,
        ready_checks=spec.ready_checks,
        startup_lines=startup_lines,
    )


def dedupe(resources: Sequence[Resource]) -> list[Resource]:
    seen: list[Resource] = []
    for r in resources:
        if r not in seen:
            seen.append(r)
    return seen


def is_websocket(r: BaseRoute) -> bool:
    return isinstance(r, WebSocketRoute)
