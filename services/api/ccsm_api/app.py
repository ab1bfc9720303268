"""The api service: every `/api/...` route except the two login endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ccsm_api import customers, desktop, items, jira, lookups, projects, time_tracking, users
from ccsm_api.bootstrap import bootstrap_cache
from ccsm_api.openapi import openapi_json
from ccsm_core import fairness, service
from ccsm_core.db import Database
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.response_cache import PER_ROLE, UNCACHED, CommitBarrier
from ccsm_core.routing import API
from ccsm_core.service import ServiceSpec, State, route
from ccsm_core.settings import Settings, load_settings


def routes() -> list[BaseRoute]:
    return [
        # The desktop facade first: its bootstrap is the hottest path (the resync storm), and Starlette tries routes
        # in order. Its paths (and its /api/desktop catch-all) overlap no other route.
        *desktop.routes(),
        route(
            "/api/openapi.json", openapi_json, cache=UNCACHED
        ),  # the OpenAPI 3.1 document of every /api route (no auth)
        # users, customers, lookups, items (contract-core §4-§7); the fixed paths come before the `:id` ones. Their
        # reads answer alike for every caller the handler admits: cached per role (and token scope), not per user.
        route("/api/users", users.list_users, cache=PER_ROLE),
        route("/api/users/roles", users.list_roles, cache=PER_ROLE),
        route("/api/users", users.create_user, ["POST"]),
        route("/api/users/{id}", users.update_user, ["PUT"]),
        route("/api/users/{id}", users.delete_user, ["DELETE"]),
        route("/api/customers", customers.list_customers, cache=PER_ROLE),
        route("/api/customers", customers.create_customer, ["POST"]),
        route("/api/customers/{id}", customers.update_customer, ["PUT"]),
        route("/api/customers/{id}", customers.delete_customer, ["DELETE"]),
        route("/api/lookups/project-form", lookups.project_form, cache=PER_ROLE),
        route("/api/lookups/task-data-definitions", lookups.list_definitions, cache=PER_ROLE),
        route("/api/lookups/task-data-definitions", lookups.create_definition, ["POST"]),
        route("/api/lookups/task-categories", lookups.task_categories, cache=PER_ROLE),
        route("/api/lookups/item-categories", lookups.item_categories, cache=PER_ROLE),
        route("/api/items/status-summary", items.status_summary, cache=PER_ROLE),
        route("/api/items/jira-sync", jira.jira_sync, ["POST"]),
        route("/api/items", items.list_items, cache=PER_ROLE),
        route("/api/items", items.create_items, ["POST"]),
        # projects and time tracking (contract-work §2-§3; the desktop facade is at the top, D1 is the auth service's)
        *projects.routes(),
        *time_tracking.routes(),
    ]


@asynccontextmanager
async def pool_share(settings: Settings, lifecycle: Lifecycle, state: State) -> AsyncIterator[State]:
    """Bounds one user's share of the database pool (issue 12 item 9, `ccsm_core.fairness`)."""
    db: Database = state["db"]
    db.share = fairness.pool_share(
        settings.db_pool_size,
        settings.db_user_connections,
        settings.db_user_queue,
        settings.db_acquire_timeout_s,
        idle=db.idle_connections,
    )
    yield {}


def spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name=API,
        routes=routes(),
        ready_checks=frozenset({"db"}),
        resources=[
            service.database,
            pool_share,
            service.redis,
            service.change_publisher,
            service.guard,
            service.response_cache,
            bootstrap_cache,
        ],
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings(API)
    app = service.build_service_app(
        spec(settings), settings, startup_lines=[f"API HTTP server running on port {settings.port}"]
    )
    app.add_middleware(CommitBarrier)  # bumps the shared data version before a write's response
    return app
