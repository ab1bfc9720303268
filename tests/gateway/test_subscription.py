"""The hub's subscription notices a Redis that goes silent without closing the connection (a vanished host or a
partition: no reset ever arrives), resubscribes, and tells every socket to resync."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from urllib.parse import urlsplit

import orjson

from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings
from ccsm_gateway.hub import Hub, stop


class FreezableProxy:
    """A TCP proxy to Redis whose current connections can be frozen: bytes stop flowing, nothing is closed."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.pipes: list[dict[str, bool]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        for pipe in self.pipes:
            pipe["frozen"] = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        state = {"frozen": False}
        self.pipes.append(state)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not state["frozen"]:
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


class RecordingSend:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        self.frames.append(orjson.loads(message["text"]))
        self.arrived.set()


def test_a_silent_subscription_is_replaced_and_every_socket_gets_resync(settings: Settings) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int]:
        url = urlsplit(settings.redis_url)
        proxy = FreezableProxy(url.hostname or "127.0.0.1", url.port or 6379)
        await proxy.start()
        proxied = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        keyspace = Keyspace(proxied)
        hub = Hub(proxied, keyspace, ping_every_s=0.2)
        send = RecordingSend()
        hub.outbox(send)
        await hub.start()
        try:
            await asyncio.wait_for(hub.subscribed.wait(), 5)
            proxy.freeze()  # the connection stays open but nothing comes back, not even pongs
            await asyncio.wait_for(send.arrived.wait(), 10)
            return send.frames, hub.subscriptions
        finally:
            await hub.close()
            await keyspace.close()
            await proxy.close()

    frames, subscriptions = asyncio.run(scenario())
    assert [f["reason"] for f in frames] == ["resync"]
    assert frames[0]["type"] == "db-changed"
    assert subscriptions == 2


def test_stopping_a_task_that_swallowed_its_cancellation_cancels_it_again_until_it_ends() -> None:
    async def scenario() -> tuple[bool, int]:
        swallowed = 0

        async def stubborn() -> None:
            nonlocal swallowed
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed += 1  # as a library that turns the cancellation into a timeout of its own would
            await asyncio.Event().wait()

        task = asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)  # let it start waiting
        await stop(task, wait_s=0.05)
        return task.cancelled(), swallowed

    cancelled, swallowed = asyncio.run(scenario())
    assert swallowed == 1
    assert cancelled
