"""`WS /ws/desktop`: the old backend's desktop protocol (contract-core §8.7) with the spec's fixes (README fix 6).

Two ways in, one protocol: the gateway process (and `make run`) serve `/ws/desktop` with their own transport
(`ccsm_gateway.transport`, no ASGI app per socket), which calls `on_message`, `refused_by_database` and the hub
below; this raw ASGI endpoint is the same protocol for any ASGI server (the route list, Starlette's TestClient).
Per connection:

- Origin, when present, must be in the CORS allow-list, otherwise the upgrade is refused (403): the upgrade
  bypasses CORS, so a web page on another origin could otherwise open a socket with a user's token.
- With auth on, the Bearer token of the upgrade request is verified; a missing, invalid or expired one is
  answered by accepting the upgrade and closing with 4401 (the desktop stops reconnecting on 4401/4403, where
  the old backend's bare HTTP 401 made it retry for ever). So is a token issued before its user's last
  revocation (see `Hub.revoked_since`). The socket also closes with 4401 when the token expires, or when a
  revocation for its user arrives on Redis (deactivated, deleted or demoted user), or is found in the
  revocation log after a gap in the subscription.
- First frame `connected`; `identify` -> `identified` (a userId other than the token's: `ok:false` then close
  4403); `ping` -> `pong`; `subscribe` -> `subscribed`; anything else, including non-JSON, is ignored.
- Every `db-changed` event reaches every open socket through the hub.
- Protocol pings (30 s, dead peers dropped), the 64 KiB frame cap, no compression and the 1012 close at
  shutdown are the server's (ccsm_core.server).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from ccsm_core.edge import TrustedProxies, header
from ccsm_core.params import positive_number
from ccsm_core.settings import Settings
from ccsm_core.tokens import LEEWAY_S, TokenError, TokenService, bearer_token
from ccsm_gateway.hub import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    Hub,
    Outbox,
    Socket,
    frame,
    issued_s,
    predates_revocation,
)
from ccsm_gateway.users import Lookup, Unknown, UserChecks

ENDPOINT = "/ws/desktop"
RETRY_AFTER_S = 30  # the desktop's longest back-off step
log = logging.getLogger("ccsm.gateway")


class DesktopSocket:
    """The ASGI app behind the `/ws/desktop` route; its state comes from the lifespan (`hub`, `tokens`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        hub: Hub = state["hub"]
        settings: Settings = state["settings"]
        tokens: TokenService = state["tokens"]
        proxies: TrustedProxies = state["proxies"]
        users: UserChecks | None = state.get("users")

        message = await receive()
        if message["type"] != "websocket.connect":
            return

        origin = header(scope, b"origin")
        if origin is not None and origin not in settings.cors_origins:
            # Per connection, so debug: anyone can send upgrades with any Origin (issue 12 item 11).
            log.debug("websocket refused: origin not allowed", extra={"origin": origin[:200]})
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return

        auth_user: int | None = None
        issued_at: float | None = None
        expires_at: float | None = None
        token = claims = None
        if settings.auth_required:
            token = bearer_token(header(scope, b"authorization"))
            try:
                if token is None:
                    raise TokenError("missing bearer token")
                claims = tokens.verify(token)
                if hub.revoked_since(claims.sub, issued_s(claims)):
                    raise TokenError("issued before its user was revoked")
                if users is not None and refused_by_database(await users.lookup(claims.sub), issued_s(claims)):
                    raise TokenError("user inactive, deleted, or revoked since the token was issued")
            except TokenError:
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": "Unauthorized"})
                return
            auth_user = claims.sub
            issued_at = issued_s(claims)
            expires_at = claims.exp + LEEWAY_S  # the instant `verify` starts refusing it

        address = proxies.client_ip(scope)
        over = hub.admit(auth_user, address)
        if over is not None:
            await send_refusal(send, over)
            return
        # This frame stays for the socket's life: keep nothing in it that the socket no longer needs.
        state = tokens = proxies = users = token = claims = origin = None  # type: ignore[assignment]
        try:
            await self.serve(scope, receive, send, hub, settings, auth_user, issued_at, expires_at)
        finally:
            hub.release(auth_user, address)

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        hub: Hub,
        settings: Settings,
        auth_user: int | None,
        issued_at: float | None,
        expires_at: float | None,
    ) -> None:
        await send({"type": "websocket.accept"})
        # The socket may live for hours: keep nothing in this frame or the scope that it no longer needs.
        scope["headers"] = ()
        scope["state"] = None
        box = hub.outbox(send)
        expiry: asyncio.TimerHandle | None = None
        try:
            if auth_user is not None:
                hub.bind_user(box, auth_user, issued_at)
            box.text(frame(type="connected", endpoint=ENDPOINT))
            if expires_at is not None:
                loop = asyncio.get_running_loop()
                expiry = loop.call_at(loop.time() + max(0.0, expires_at - time.time()), _expire, box)
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    if not box.closing:
                        on_message(hub, box, auth_user, settings, message)
                elif kind == "websocket.disconnect":
                    return
        finally:
            if expiry is not None:
                expiry.cancel()
            hub.discard(box)


def refused_by_database(record: Lookup, issued_at: float | None) -> bool:
    """Whether the database's answer refuses a token of that user issued at `issued_at` (UNKNOWN: fail open)."""
    if isinstance(record, Unknown):
        return False
    return record is None or not record.active or predates_revocation(issued_at, record.revoked_at)


REFUSAL_BODY = orjson.dumps({"error": "Too many connections"})


async def send_refusal(send: Send, over: str) -> None:
    """The answer to an upgrade over a socket cap: HTTP 429 before the handshake (the desktop's client reports an
    error and reconnects with its back-off, 1 s doubling to 30 s; it stops only on 4401/4403)."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": REFUSAL_BODY})


def _expire(box: Outbox) -> None:
    log.debug("socket closed: token expired", extra={"userId": box.user_id})
    box.close(CLOSE_UNAUTHORIZED, "Token expired")


def parse(message: Message) -> dict[str, Any] | None:
    raw = message.get("text")
    if raw is None:
        raw = message.get("bytes")
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # the old backend's {type:'text'}: ignored
    return value if isinstance(value, dict) else None


def on_message(hub: Hub, box: Socket, auth_user: int | None, settings: Settings, message: Message) -> None:
    msg = parse(message)
    if msg is None:
        return
    kind = msg.get("type")
    if kind == "ping":
        box.text(frame(type="pong"))
    elif kind == "subscribe":
        box.text(frame(type="subscribed", ok=True))
    elif kind == "identify":
        user = positive_number(msg.get("userId"))  # Number(userId), finite and > 0, else nothing happens
        if not user:
            return
        user_id: int | float = int(user) if user.is_integer() and math.isfinite(user) else user
        if auth_user is not None and user_id != auth_user:
            log.debug("identify refused: not the token's user", extra={"userId": auth_user})
            box.text(frame(type="identified", ok=False, error="Forbidden"))
            box.close(CLOSE_FORBIDDEN, "Forbidden")
            return
        if auth_user is None and isinstance(user_id, int):
            # Auth off (local only): revocations follow the identified user, and the identify stands in for the
            # token's `iat` when the revocation log is read (a revocation logged before it does not close it).
            hub.bind_user(box, user_id, time.time())
        box.text(frame(type="identified", ok=True, userId=user_id))
