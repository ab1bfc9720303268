"""Helpers for talking to a real gateway process: a websockets client with deadlines on every wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.harness import ServiceProcess

WAIT_S = 5.0


def token_for(settings: Settings, user_id: int = 2, role: int = 2, now: float | None = None, ttl_s: int = 3600) -> str:
    return TokenService(settings.jwt_secret, expires_seconds=ttl_s).issue(user_id, role, f"user{user_id}", now=now)


async def open_socket(
    proc: ServiceProcess,
    token: str | None = None,
    origin: str | None = None,
    path: str = "/ws/desktop",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> ClientConnection:
    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    if origin is not None:
        headers["Origin"] = origin
    return await connect(
        proc.ws_url + path, additional_headers=headers, open_timeout=WAIT_S, compression=None, **kwargs
    )


async def recv_json(ws: ClientConnection, within: float = WAIT_S) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), within)
    value = orjson.loads(raw)
    assert isinstance(value, dict)
    return value


async def recv_type(ws: ClientConnection, kind: str, within: float = WAIT_S) -> dict[str, Any]:
    """The next frame of type `kind`, skipping others (e.g. a db-changed from another test's write)."""
    deadline = time.monotonic() + within
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg.get("type") == kind:
            return msg


async def close_code(ws: ClientConnection, within: float = WAIT_S) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason it sent."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


async def opened(proc: ServiceProcess, token: str | None = None, **kwargs: Any) -> ClientConnection:
    """A socket past its `connected` frame."""
    ws = await open_socket(proc, token, **kwargs)
    first = await recv_json(ws)
    assert first["type"] == "connected"
    return ws


async def publish(settings: Settings, channel: str, payload: bytes | str) -> int:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        return int(await client.publish(settings.redis_prefix + channel, payload))
    finally:
        await client.aclose()


DB_CHANGED = "events:db-changed"
REVOCATIONS = "events:revocations"
