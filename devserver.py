"""`make run`: every service's routes in one process on PORT (4000), in the URL table's order, with every
service's resources entered, against the MySQL and Redis of DB_* / REDIS_URL.

On a local database it first creates the database, migrates it and loads the dev seed when it is empty; on the
first run it writes an untracked `.env.local` with a random JWT_SECRET so the web portal gets tokens.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from starlette.applications import Starlette

from ccsm_api.app import spec as api_spec
from ccsm_auth.app import spec as auth_spec
from ccsm_core import migrations, service
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.logs import configure_logging, get_logger
from ccsm_core.routing import API, AUTH, DEFAULT_SERVICE, GATEWAY, RULES
from ccsm_core.server import exit_with, serve
from ccsm_core.service import ServiceSpec
from ccsm_core.settings import ConfigError, Settings, load_settings
from ccsm_gateway.app import spec as gateway_spec
from ccsm_gateway.transport import DesktopConnection

ROOT = Path(__file__).resolve().parent
SEED = ROOT / "fixtures" / "seed.sql"
log = get_logger("ccsm.devserver")


def specs(settings: Settings) -> dict[str, ServiceSpec]:
    return {AUTH: auth_spec(settings), GATEWAY: gateway_spec(settings), API: api_spec(settings)}


def create_app(settings: Settings) -> Starlette:
    """Routes concatenated in URL-table order (first match wins, like the ALB), then the default service's ops."""
    by_name = specs(settings)
    routes = []
    resources = []
    for rule in RULES:
        routes.extend(by_name[rule.service].routes)
    checks: set[str] = set()
    for name in (AUTH, GATEWAY, API):
        resources.extend(by_name[name].resources)
        checks |= by_name[name].ready_checks
    routes.extend(service.ops_routes())  # /health and /ready: the default service's (DEFAULT_SERVICE)
    lifecycle = Lifecycle(f"dev ({'+'.join(by_name)}; default {DEFAULT_SERVICE})")
    return service.build_app(
        settings,
        routes,
        service.dedupe(resources),
        ready_checks=frozenset(checks),  # the dev server is ready when every service's dependencies are
        lifecycle=lifecycle,
        startup_lines=[  # logged once the socket is bound
            f"CCSM dev server listening on http://127.0.0.1:{settings.port} "
            f"(ws://127.0.0.1:{settings.port}/ws/desktop)",
            f"API HTTP server running on port {settings.port}",
            f"WebSocket started on endpoint: ws://{settings.host}:{settings.port}/ws/desktop",
        ],
    )


def ensure_local_env(path: Path) -> None:
    if path.exists() or os.environ.get("JWT_SECRET"):
        return
    path.write_text(
        "# Written by `make run` on first start; untracked. Local development only.\n"
        "AUTH_REQUIRED=true\n"
        f"JWT_SECRET={secrets.token_urlsafe(48)}\n",
        encoding="utf-8",
    )
    path.chmod(0o600)
    print(f"wrote {path.name} with a fresh JWT_SECRET (local development only)")


def bootstrap(settings: Settings) -> None:
    if migrations.create_database(settings):
        log.info(f"created database {settings.db_name}")
    migrations.migrate(settings)
    if migrations.is_empty(settings):
        migrations.load_script(settings, SEED.read_text(encoding="utf-8"))
        log.info(f"loaded the dev seed {SEED.relative_to(ROOT)} (logins: see its header)")


def main() -> None:
    ensure_local_env(ROOT / ".env.local")
    try:
        settings = load_settings("dev", cwd=ROOT)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("dev", settings.log_level)
    if settings.is_local:
        bootstrap(settings)
    exit_with(serve(create_app(settings), settings, ws=DesktopConnection))


if __name__ == "__main__":
    main()
