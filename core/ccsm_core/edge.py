"""The HTTP edge of every service, as one pure ASGI middleware (no per-request task or thread hop).

In order, for each HTTP request: request id (accepted from `X-Request-ID` or generated, and returned), CORS
against an exact allow-list (preflights answered before any auth, contract-core §8.4), the body-size limit
(413), helmet's default headers on every response when `USE_HELMET` is on, the error table for anything a
handler lets escape (no stack trace ever leaves the process), and one JSON access-log line (path only: a query
string is never logged). A client that goes away before its body arrived is an info event and status 499 in the
access line (nginx's "client closed request"), not an error.

`ErrorResponses` gives the errors answered outside the app (by the protocol layer, `ccsm_core.protocols`) the
same body and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import time
from collections.abc import Iterable
from functools import lru_cache
from http import HTTPStatus

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccsm_core.errors import MESSAGES, ApiError, classify, db_contention_kind
from ccsm_core.logs import request_id_var
from ccsm_core.metrics import Metrics
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.edge")
access = logging.getLogger("ccsm.access")

# helmet 8 defaults, as listed in the spec README ("Security headers") and contract-core §8.4.
HELMET_HEADERS: tuple[tuple[bytes, bytes], ...] = tuple(
    (k.lower().encode(), v.encode())
    for k, v in (
        (
            "Content-Security-Policy",
            "default-src 'self'; base-uri 'self'; font-src 'self' https: data:; form-action 'self'; "
            "frame-ancestors 'self'; img-src 'self' data:; object-src 'none'; script-src 'self'; "
            "script-src-attr 'none'; style-src 'self' https: 'unsafe-inline'; upgrade-insecure-requests",
        ),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Origin-Agent-Cluster", "?1"),
        ("Referrer-Policy", "no-referrer"),
        ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-DNS-Prefetch-Control", "off"),
        ("X-Download-Options", "noopen"),
        ("X-Frame-Options", "SAMEORIGIN"),
        ("X-Permitted-Cross-Domain-Policies", "none"),
        ("X-XSS-Protection", "0"),
    )
)

# The `cors` package's default method list (contract-core §8.4).
CORS_METHODS = b"GET,HEAD,PUT,PATCH,POST,DELETE"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_DROP_HEADERS = frozenset({b"server", b"x-powered-by"})
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away: logged, never sent


class BodyTooLarge(ApiError):
    def __init__(self) -> None:
        super().__init__(413)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def new_request_id() -> str:
    return os.urandom(16).hex()  # 128 random bits like a uuid4, at a quarter of its cost


class ErrorResponses:
    """Errors answered outside the app (an invalid request, a head too large or too slow, the connection cap, a
    refused WebSocket handshake) in the app's shape: the error table's `{"error": ...}`, a request id, the
    security headers the app's own errors carry, and `Connection: close`."""

    def __init__(self, settings: Settings) -> None:
        self.security: tuple[tuple[bytes, bytes], ...] = HELMET_HEADERS if settings.use_helmet else ()

    @staticmethod
    def body(status: int, message: str | None = None) -> bytes:
        return b'{"error":' + _json_str(message or MESSAGES.get(status, "Error")) + b"}"

    def headers(self, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *extra,
            (b"x-request-id", new_request_id().encode()),
            *self.security,
        ]

    def http(
        self,
        status: int,
        message: str | None = None,
        leading: Iterable[tuple[bytes, bytes]] = (),
        extra: Iterable[tuple[bytes, bytes]] = (),
    ) -> bytes:
        """The whole HTTP/1.1 response; `leading`: the server's own headers (uvicorn's Date)."""
        body = self.body(status, message)
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        lines = [b"HTTP/1.1 %d %s" % (status, phrase)]
        lines += [name + b": " + value for name, value in (*leading, *self.headers(body, extra))]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


class TrustedProxies:
    """Which peers may tell us the client address through X-Forwarded-For."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)

    @lru_cache(maxsize=1024)  # noqa: B019 - one instance per app, a handful of peer addresses
    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_ip(self, scope: Scope) -> str:
        """The right-most address not set by a trusted proxy (RFC 7239 §5.2's reasoning, applied to XFF)."""
        peer = scope.get("client")
        peer_ip = str(peer[0]) if peer else ""
        if not self.networks or not self.trusts(peer_ip):
            return peer_ip
        forwarded = header(scope, b"x-forwarded-for")
        if not forwarded:
            return peer_ip
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer_ip


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics | None = None) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics or Metrics(settings.service)
        self.allowed_origins = frozenset(settings.cors_origins)
        self.extra_headers: list[tuple[bytes, bytes]] = list(HELMET_HEADERS) if settings.use_helmet else []
        self.body_limit = settings.body_limit_bytes
        self.access_log = settings.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        rid = header(scope, b"x-request-id")
        if rid is None or not _REQUEST_ID_RE.match(rid):
            rid = new_request_id()
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        origin = header(scope, b"origin")
        origin_allowed = origin is not None and origin in self.allowed_origins
        status_holder = [0]
        response_started = False

        def decorate(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
            out = [h for h in headers if h[0] not in _DROP_HEADERS]
            out.append((b"x-request-id", rid.encode()))
            out.extend(self.extra_headers)
            out.append((b"vary", b"Origin"))
            if origin_allowed:
                out.append((b"access-control-allow-origin", origin.encode()))  # type: ignore[union-attr]
            return out

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                message["headers"] = decorate(list(message.get("headers", [])))
            await send(message)

        async def send_error(status: int, msg: str, headers: dict[str, str] | None = None) -> None:
            body = b'{"error":' + _json_str(msg) + b"}"
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            hdrs.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
            await send_wrapper({"type": "http.response.start", "status": status, "headers": hdrs})
            await send_wrapper({"type": "http.response.body", "body": body})

        try:
            if scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method") is not None:
                await self._preflight(scope, origin, origin_allowed, send_wrapper, send_error)
                return

            length = header(scope, b"content-length")
            if length is not None:
                if not length.isdigit():
                    await send_error(400, "Invalid Content-Length")
                    return
                if int(length) > self.body_limit:
                    await send_error(413, MESSAGES[413])
                    return

            received = 0
            limit = self.body_limit

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge()
                return message

            await self.app(scope, limited_receive, send_wrapper)
        except ClientDisconnect:
            # The client went away before its body arrived: nothing to answer, nothing went wrong here.
            status_holder[0] = CLIENT_CLOSED_REQUEST
            log.info("client disconnected before the request body arrived", extra={"path": scope["path"]})
        except asyncio.CancelledError:
            # Cancelled at the shutdown force limit: say so in the error table's words, then let it unwind.
            if not response_started:
                with contextlib.suppress(Exception):
                    await send_error(503, MESSAGES[503], {"connection": "close"})
            raise
        except Exception as exc:  # the last line of defence: every escape becomes the error table's answer
            status, msg, headers = classify(exc)
            contention = db_contention_kind(exc)
            if contention is not None:  # a lost lock race: the client retries (Retry-After), nothing is broken
                log.warning("database contention", extra={"kind": contention, "path": scope["path"]})
            elif status >= 500:
                log.error(
                    "unhandled error" if status == 500 else "dependency unavailable",
                    exc_info=exc if status == 500 else None,
                    extra={"error": type(exc).__name__, "path": scope["path"]},
                )
            if not response_started:
                await send_error(status, msg, headers)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.request(scope.get("route"), status_holder[0], elapsed)
            if self.access_log:
                access.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status_holder[0],
                        "durationMs": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)

    async def _preflight(self, scope: Scope, origin: str | None, allowed: bool, send: Send, send_error: object) -> None:
        if not allowed:
            # Never reflect an arbitrary Origin nor allow `null` (spec README, "CORS").
            await send_error(403, "Origin not allowed")  # type: ignore[operator]
            return
        headers = [
            (b"access-control-allow-methods", CORS_METHODS),
            (b"content-length", b"0"),
        ]
        requested = header(scope, b"access-control-request-headers")
        if requested:
            headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
            headers.append((b"vary", b"Access-Control-Request-Headers"))
        headers.append((b"access-control-max-age", b"600"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _json_str(text: str) -> bytes:
    return orjson.dumps(text)
