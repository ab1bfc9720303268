"""The db-changed publisher (contract-core §8.6): a 150 ms fixed window, the last reason wins, and a write never
depends on Redis being up (the event is retried with back-off and published when Redis returns)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from ccsm_core.db import Database
from ccsm_core.events import WINDOW_S, ChangePublisher
from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings
from tests.harness import free_port


async def next_message(pubsub: aioredis.client.PubSub, within: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=within)
            if message is not None:
                return message


async def subscribed(client: aioredis.Redis, channel: str) -> aioredis.client.PubSub:
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    await next_message_of_type(pubsub, "subscribe")
    return pubsub


async def next_message_of_type(pubsub: aioredis.client.PubSub, kind: str) -> None:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(timeout=5)
            if message is not None and message["type"] == kind:
                return


def test_a_burst_of_writes_gives_one_event_with_the_last_reason_after_the_window(settings: Settings) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], float, float, int]:
        keyspace = Keyspace(settings)
        publisher = ChangePublisher(keyspace)
        pubsub = await subscribed(keyspace.client, keyspace.db_changed_channel)
        try:
            started = time.time()
            publisher.mark("pool-query")
            publisher.mark("connection-execute")
            publisher.mark("transaction-commit")
            first = await next_message(pubsub)
            received = time.time()
            await publisher.close()
            # Redis runs commands in order: everything the publisher sent arrives before this sentinel.
            await keyspace.client.publish(keyspace.db_changed_channel, b"sentinel")
            events = [orjson.loads(first["data"])]
            while (message := await next_message(pubsub))["data"] != b"sentinel":
                events.append(orjson.loads(message["data"]))
            return events, started, received, publisher.published
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await keyspace.close()

    events, started, received, published = asyncio.run(scenario())
    assert published == 1
    assert len(events) == 1
    event = events[0]
    assert list(event) == ["type", "reason", "ts"]
    assert event["type"] == "db-changed"
    assert event["reason"] == "transaction-commit"
    assert received - started >= WINDOW_S - 0.01  # a fixed window, not an immediate send
    assert started * 1000 <= event["ts"] <= received * 1000 + 1


class BlockingRedis:
    """A fake Redis client whose publish waits until the test releases it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, channel: str, frame: bytes) -> int:
        self.frames.append(orjson.loads(frame))
        self.started.set()
        await self.release.wait()
        return 1


@dataclasses.dataclass
class FakeKeyspace:
    client: BlockingRedis
    db_changed_channel: str = "db-changed"


def test_a_change_committed_while_an_event_is_being_published_gets_an_event_of_its_own() -> None:
    async def scenario() -> list[dict[str, Any]]:
        fake = BlockingRedis()
        publisher = ChangePublisher(FakeKeyspace(fake), window_s=0.0)  # type: ignore[arg-type]
        publisher.mark("transaction-commit")
        await asyncio.wait_for(fake.started.wait(), 5)
        publisher.mark("transaction-commit")  # same reason, but a later commit than the frame in flight
        fake.release.set()
        await publisher.close(flush_timeout_s=5)
        return fake.frames

    frames = asyncio.run(scenario())
    assert [f["reason"] for f in frames] == ["transaction-commit", "transaction-commit"]


class PrivateRedis:
    """A redis-server of our own on a free port, so a test can stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ccsm-redis-")
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 10
        for line in self.proc.stdout:
            if "Ready to accept connections" in line:
                return
            if time.monotonic() > deadline:
                break
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


class Signal(logging.Handler):
    """Sets an asyncio event when a log line containing `text` is emitted."""

    def __init__(self, text: str, event: asyncio.Event) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = event
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            self.event.set()


def test_a_write_succeeds_while_redis_is_down_and_its_event_is_published_when_redis_returns(
    fresh_db: Settings, private_redis: PrivateRedis
) -> None:
    settings = dataclasses.replace(fresh_db, redis_url=private_redis.url)

    async def scenario() -> tuple[int, dict[str, Any], list[logging.LogRecord], int]:
        failed = asyncio.Event()
        signal = Signal("db-changed publish failed", failed)
        logging.getLogger("ccsm.events").addHandler(signal)
        keyspace = Keyspace(settings)
        publisher = ChangePublisher(keyspace)
        db = Database(settings)
        await db.open()
        db.on_commit(publisher.mark)
        try:
            private_redis.stop()
            rows = await db.execute("UPDATE customers SET name = name WHERE id = %s", (1,), reason="pool-execute")
            await asyncio.wait_for(failed.wait(), 10)
            private_redis.start()
            listener = aioredis.Redis.from_url(private_redis.url)
            pubsub = await subscribed(listener, keyspace.db_changed_channel)
            message = await next_message(pubsub, within=15)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await listener.aclose()
            return rows, orjson.loads(message["data"]), signal.records, publisher.dropped
        finally:
            logging.getLogger("ccsm.events").removeHandler(signal)
            await publisher.close()
            await db.close()
            await keyspace.close()

    rows, event, records, dropped = asyncio.run(scenario())
    assert rows == 1  # the write committed although Redis was down
    assert event["type"] == "db-changed"
    assert event["reason"] == "pool-execute"
    assert dropped >= 1
    assert records[0].__dict__["reason"] == "pool-execute"  # the log says which event is pending
