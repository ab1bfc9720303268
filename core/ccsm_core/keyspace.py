"""Redis: one client per process, and every key and channel name behind one prefix.

The prefix (`REDIS_PREFIX`, default `ccsm:`) lets test runs and environments share a Redis without seeing each
other's counters or events.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.keyspace")


class Keyspace:
    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.redis_prefix
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
            health_check_interval=15,
            retry_on_timeout=False,
        )

    def key(self, *parts: str | int) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    @property
    def db_changed_channel(self) -> str:
        return self.key("events", "db-changed")

    @property
    def revocations_channel(self) -> str:
        return self.key("events", "revocations")

    @property
    def revocation_log_key(self) -> str:
        """A sorted set: user id -> when (epoch ms) it was last revoked, kept for a token's lifetime, so that a
        process that was not subscribed when a revocation was published can still act on it."""
        return self.key("revocations", "log")

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self, timeout_s: float = 2.0) -> None:
        try:
            await asyncio.wait_for(self.client.aclose(), timeout_s)
        except TimeoutError:
            log.warning("redis client did not close in time")
