"""Post-deploy smoke tests (runbook §9): `make smoke BASE_URL=https://...` against any deployment.

Credentials come from the environment (never the command line, which lands in shell history):
SMOKE_USERNAME / SMOKE_PASSWORD (an admin or employee web login) and SMOKE_AUTHCODE (a desktop code).
Prints one line per check with its latency and exits 1 if any check failed.

The write that proves db-changed delivery is harmless: it sets a project's Jira flag to the value it already
has (`PUT /api/projects/:id/jira`); the UPDATE matches the row, commits, and every desktop gets `db-changed`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.sync.client import ClientConnection, connect

PROTECTED = "/api/lookups/task-categories"


@dataclass
class Smoke:
    base_url: str
    username: str
    password: str
    authcode: str
    timeout_s: float = 10.0
    results: list[tuple[str, bool, float, str]] = field(default_factory=list)
    token: str | None = None
    ws: ClientConnection | None = None
    client: httpx.Client = field(init=False)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s)

    def check(self, name: str, fn: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            ok = False
        ms = (time.perf_counter() - started) * 1000
        self.results.append((name, ok, ms, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name:<34} {ms:8.1f} ms  {detail}", flush=True)
        return ok

    def expect(self, response: httpx.Response, status: int) -> httpx.Response:
        if response.status_code != status:
            raise AssertionError(f"expected {status}, got {response.status_code}: {response.text[:200]}")
        return response

    # --- the checks ---------------------------------------------------------------------------------------

    def health(self) -> str:
        body = self.expect(self.client.get("/health"), 200).json()
        assert body["status"] == "ok", body
        return f"service={body.get('service')} uptime={body.get('uptimeSec')}s"

    def ready(self) -> str:
        assert self.expect(self.client.get("/ready"), 200).json() == {"status": "ready"}
        return "ready"

    def login(self) -> str:
        r = self.client.post("/api/login", json={"username": self.username, "password": self.password})
        body = self.expect(r, 200).json()
        assert body.get("accessToken"), "no accessToken in the login response"
        assert body.get("tokenType") == "Bearer"
        self.token = body["accessToken"]
        return f"user id={body.get('id')} role={body.get('role')}"

    def without_token(self) -> str:
        body = self.expect(self.client.get(PROTECTED), 401).json()
        assert "error" in body
        return str(body["error"])

    def with_token(self) -> str:
        rows = self.expect(self.client.get(PROTECTED, headers=self.auth()), 200).json()
        assert isinstance(rows, list)
        return f"{len(rows)} task categories"

    def desktop_login(self) -> str:
        r = self.client.post("/api/desktop/login-authcode", json={"code": self.authcode})
        body = self.expect(r, 200).json()
        assert isinstance(body, dict), "the desktop login answered null: the code matched no active user"
        assert body.get("accessToken"), "no accessToken in the desktop login response"
        # D1's body has the user's fields at the top level (contract-work §4), not under `user`.
        return f"user id={body.get('id')} login={body.get('login')}"

    def ws_connected(self) -> str:
        self.ws = self.stack.enter_context(
            connect(self.ws_url(), additional_headers=self.auth(), open_timeout=self.timeout_s)
        )
        frame = json.loads(self.ws.recv(timeout=self.timeout_s))
        assert frame.get("type") == "connected", frame
        return f"endpoint={frame.get('endpoint')}"

    def write(self) -> str:
        projects = self.expect(self.client.get("/api/projects", headers=self.auth()), 200).json()
        assert projects, "no project to write to"
        project = projects[0]
        flag = project.get("isJira", project.get("is_jira", 0)) or 0
        r = self.client.put(f"/api/projects/{project['id']}/jira", json={"isJira": flag}, headers=self.auth())
        self.expect(r, 200)
        return f"project {project['id']} isJira={flag} (unchanged)"

    def db_changed(self) -> str:
        assert self.ws is not None, "no WebSocket (the connect check failed)"
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no db-changed within the timeout")
            frame = json.loads(self.ws.recv(timeout=remaining))
            if frame.get("type") == "db-changed":
                return f"reason={frame.get('reason')}"

    # --- helpers --------------------------------------------------------------------------------------------

    def auth(self) -> dict[str, str]:
        if not self.token:
            raise AssertionError("no token (the login check failed)")
        return {"Authorization": f"Bearer {self.token}"}

    def ws_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, "/ws/desktop", "", ""))

    def run(self) -> bool:
        checks: list[tuple[str, Callable[[], str]]] = [
            ("GET /health 200", self.health),
            ("GET /ready 200", self.ready),
            ("POST /api/login returns a token", self.login),
            ("protected endpoint without token 401", self.without_token),
            ("protected endpoint with token 200", self.with_token),
            ("desktop auth-code login", self.desktop_login),
            ("WS /ws/desktop connected", self.ws_connected),
            ("a harmless write commits", self.write),
            ("WS receives db-changed", self.db_changed),
        ]
        try:
            for name, fn in checks:
                self.check(name, fn)
        finally:
            self.stack.close()
            self.client.close()
        failed = [r for r in self.results if not r[1]]
        print(f"smoke: {len(self.results) - len(failed)} passed, {len(failed)} failed", flush=True)
        return not failed


def main(argv: list[str] | None = None, environ: dict[str, Any] | None = None) -> int:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m ops.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=env.get("BASE_URL", "http://127.0.0.1:4000"))
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    missing = [k for k in ("SMOKE_USERNAME", "SMOKE_PASSWORD", "SMOKE_AUTHCODE") if not env.get(k)]
    if missing:
        print(f"smoke: set {', '.join(missing)} in the environment", file=sys.stderr)
        return 2
    smoke = Smoke(
        args.base_url.rstrip("/"),
        env["SMOKE_USERNAME"],
        env["SMOKE_PASSWORD"],
        env["SMOKE_AUTHCODE"],
        timeout_s=args.timeout,
    )
    return 0 if smoke.run() else 1


if __name__ == "__main__":
    sys.exit(main())
