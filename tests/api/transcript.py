"""What every api test reads from: the old backend's recorded transcript (fixtures/examples.json), tokens for
the seed users (fixtures/seed.sql header), replaying a recorded call, and small database probes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.testclient import TestClient

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.harness import ROOT

EXAMPLES: list[dict[str, Any]] = orjson.loads((ROOT / "fixtures" / "examples.json").read_bytes())

# Seed users: id, role, login. `pnair_desktop` is pnair's desktop (authcode) token; tbecker is inactive.
SEED_USERS = {
    "admin": (1, 1, "admin"),
    "mreyes": (2, 2, "mreyes"),
    "pnair": (3, 2, "pnair"),
    "pnair_desktop": (3, 2, "pnair"),
    "tbecker": (4, 2, "tbecker"),
    "customer": (5, 3, "pwcourt"),
}


def call(endpoint: str, index: int) -> dict[str, Any]:
    """One recorded call of the old backend, e.g. `call("GET /api/users", 0)`."""
    for entry in EXAMPLES:
        if entry["endpoint"] == endpoint:
            recorded: dict[str, Any] = entry["calls"][index]
            return recorded
    raise KeyError(endpoint)


def token(settings: Settings, who: str, expires_seconds: int = 3600, now: float | None = None) -> str:
    user_id, role, login = SEED_USERS[who]
    return TokenService(settings.jwt_secret, expires_seconds=expires_seconds).issue(user_id, role, login, now=now)


def auth(settings: Settings, who: str | None) -> dict[str, str]:
    """Headers for the transcript's `who` (`admin`, `mreyes`, `customer`, `(no token)`, ...)."""
    if who is None or who == "(no token)":
        return {}
    return {"Authorization": f"Bearer {token(settings, who)}"}


def replay(client: TestClient, settings: Settings, endpoint: str, index: int, url: str | None = None) -> Any:
    """Send a recorded request, assert the status and body are the recorded ones, and return the body."""
    rec = call(endpoint, index)
    r = client.request(rec["method"], url or rec["url"], headers=auth(settings, rec["who"]), json=rec["body"])
    assert (r.status_code, r.json()) == (rec["status"], rec["response"]), rec["note"]
    return r.json()


def query(settings: Settings, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute(sql, args)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def execute(settings: Settings, sql: str, args: tuple[Any, ...] = ()) -> None:
    conn = connect_sync(settings, settings.db_name)
    try:
        conn.cursor().execute(sql, args)
    finally:
        conn.close()
