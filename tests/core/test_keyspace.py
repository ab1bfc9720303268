"""A `Lane` (ccsm_core.keyspace): a Redis connection of its own for one-at-a-time commands, on the real Redis.
A connection the server dropped, or one that stalled past the lane's bound, is replaced by the next command."""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import urlsplit

import pytest
import redis.exceptions

from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings
from tests.gateway.test_subscription import FreezableProxy


def _client_ids(client_list: list[dict[str, str]]) -> set[int]:
    return {int(c["id"]) for c in client_list}


def test_a_lane_has_a_connection_of_its_own_and_replaces_one_the_server_dropped(settings: Settings) -> None:
    async def scenario() -> None:
        ks = Keyspace(settings)
        lane = ks.lane(1.0)
        key = ks.key("test", "lane")
        try:
            await ks.client.delete(key)
            assert [await lane.command("INCR", key) for _ in range(3)] == [1, 2, 3]
            mine = int(await lane.command("CLIENT", "ID"))
            assert mine != int(await ks.client.client_id())  # not one of the client's pooled connections
            await ks.client.client_kill_filter(_id=mine)
            with pytest.raises(redis.exceptions.ConnectionError):
                await lane.command("INCR", key)  # the server closed it
            again = int(await lane.command("CLIENT", "ID"))
            assert again != mine
            assert await lane.command("GET", key) == b"3"
        finally:
            await ks.client.delete(key)
            await ks.close()
        probe = Keyspace(settings)
        try:
            assert again not in _client_ids(await probe.client.client_list())  # closed with its keyspace
        finally:
            await probe.close()

    asyncio.run(scenario())


def test_a_stalled_lane_gives_up_at_its_bound_and_the_next_command_reconnects(settings: Settings) -> None:
    async def scenario() -> None:
        url = urlsplit(settings.redis_url)
        proxy = FreezableProxy(url.hostname or "127.0.0.1", url.port or 6379)
        await proxy.start()
        ks = Keyspace(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{proxy.port}/0"))
        lane = ks.lane(0.3)
        try:
            assert await lane.command("PING") == b"PONG"
            proxy.freeze()  # bytes stop flowing on the lane's connection, nothing is closed
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await lane.command("PING")
            assert asyncio.get_running_loop().time() - started < 2.0
            assert await lane.command("PING") == b"PONG"  # a new connection through the proxy
            assert len(proxy.pipes) == 2
        finally:
            await ks.close()
            await proxy.close()

    asyncio.run(scenario())
