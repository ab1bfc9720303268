"""A small fake of Jira Cloud's REST API v3, served over real HTTP on loopback.

It answers the two calls the sync makes: `GET /rest/api/3/project/search` (offset paging with `startAt` /
`isLast`) and `GET /rest/api/3/search/jql` (cursor paging with `nextPageToken`, no `total`). A test can script
the next answers per path: `"429:<seconds>"` (rate limited with `Retry-After`), a bare status such as `"500"`,
or `"hold"` (the answer waits until `release` is set, which is how a test makes the client time out or keeps a
call in flight). Every request is recorded with its arrival time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

PROJECT_SEARCH = "/rest/api/3/project/search"
ISSUE_SEARCH = "/rest/api/3/search/jql"
HOLD_LIMIT_S = 30.0


@dataclass
class Recorded:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float


def issue(key: str, status: str | None, assignee: str | None, created: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "status": {"name": status} if status is not None else None,
        "assignee": {"displayName": assignee, "accountId": "x"} if assignee is not None else None,
        "created": created,
    }
    return {"id": key.split("-")[-1], "key": key, "fields": fields}


@dataclass
class FakeJira:
    projects: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    project_page_size: int = 50
    issue_page_size: int = 100
    plan: dict[str, list[str]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    # --- answers ------------------------------------------------------------------------------------------------

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if path == PROJECT_SEARCH:
            wanted = params.get("query", "").lower()
            matches = [p for p in self.projects if wanted in str(p["name"]).lower()]
            start = int(params.get("startAt", "0"))
            size = min(int(params.get("maxResults", "50")), self.project_page_size)
            page = matches[start : start + size]
            body = {
                "startAt": start,
                "maxResults": size,
                "total": len(matches),
                "isLast": start + size >= len(matches),
                "values": page,
            }
            return 200, {}, body
        if path == ISSUE_SEARCH:
            if "jql" not in params:
                return 400, {}, {"errorMessages": ["jql is required"]}
            token = params.get("nextPageToken")
            start = int(token.removeprefix("page-")) if token else 0
            size = min(int(params.get("maxResults", "50")), self.issue_page_size)
            page = self.issues[start : start + size]
            body = {"issues": page, "isLast": start + size >= len(self.issues)}
            if not body["isLast"]:
                body["nextPageToken"] = f"page-{start + size}"
            return 200, {}, body
        return 404, {}, {"errorMessages": ["not found"]}

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.requests.append(Recorded(parts.path, params, headers, time.monotonic()))
        scripted = self.plan.get(parts.path)
        action = scripted.pop(0) if scripted else None
        if action == "hold":
            self.holding.set()
            self.release.wait(HOLD_LIMIT_S)
            action = None
        if action is not None and action.startswith("429"):
            status, extra, body = 429, {"Retry-After": action.split(":", 1)[1]}, {"errorMessages": ["slow down"]}
        elif action is not None:
            status, extra, body = int(action), {}, {"errorMessages": [f"scripted {action}"]}
        else:
            status, extra, body = self.answer(parts.path, params)
        payload = orjson.dumps(body)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)


@contextmanager
def serving(fake: FakeJira) -> Iterator[FakeJira]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            fake.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
