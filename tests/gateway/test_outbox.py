"""The per-socket outbox: frames are handed to the server without the publisher ever awaiting a client, in
order, and a client that stops draining is closed with 1013 once its bounded queue overflows."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from ccsm_core.settings import Settings
from ccsm_gateway.hub import Hub, Outbox


class FakeServerSend:
    """An ASGI `send` like uvicorn's: it completes at once while the transport is writable, and suspends on an
    event while the transport is paused (the peer is not reading)."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        self.sent.append(message)
        self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait (at most 5 s) until `done()` holds, woken by each frame sent."""
        async with asyncio.timeout(5):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@dataclasses.dataclass
class FakeKeyspace:
    prefix: str = "test:"


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("text", f"close {m.get('code')}") for m in messages]


def make_hub(limit: int = 3) -> Hub:
    return Hub(Settings(), FakeKeyspace(), queue_limit=limit)  # type: ignore[arg-type]


def test_a_writable_socket_gets_each_frame_inline_without_a_task() -> None:
    async def scenario() -> tuple[list[str], bool]:
        hub = make_hub()
        send = FakeServerSend()
        box = hub.outbox(send)
        hub.broadcast("a")
        hub.broadcast("b")
        return texts(send.sent), box._task is None  # sent before broadcast returned

    sent, no_task = asyncio.run(scenario())
    assert sent == ["a", "b"]
    assert no_task


def test_a_paused_socket_queues_frames_in_order_and_drains_them_when_writable_again() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        hub = make_hub(limit=5)
        send = FakeServerSend()
        hub.outbox(send)
        send.writable.clear()
        for text in ("a", "b", "c"):
            hub.broadcast(text)  # returns at once although the socket is blocked
        during = texts(send.sent)
        send.writable.set()
        await send.until(lambda: len(send.sent) >= 3)
        return during, texts(send.sent)

    during, after = asyncio.run(scenario())
    assert during == []
    assert after == ["a", "b", "c"]


def test_a_socket_that_stops_draining_is_closed_with_1013_and_leaves_the_fan_out() -> None:
    async def scenario() -> tuple[list[str], int, int, bool]:
        hub = make_hub(limit=3)
        slow, fast = FakeServerSend(), FakeServerSend()
        slow_box = hub.outbox(slow)
        hub.outbox(fast)
        slow.writable.clear()
        for i in range(10):
            hub.broadcast(str(i))
        slow.writable.set()
        await slow.until(lambda: bool(slow.sent) and "text" not in slow.sent[-1])
        return texts(slow.sent) + texts(fast.sent), hub.slow_closed, len(hub.clients), slow_box.closing

    sent, slow_closed, clients, closing = asyncio.run(scenario())
    slow_part, fast_part = sent[: len(sent) - 10], sent[-10:]
    assert fast_part == [str(i) for i in range(10)]  # the fast socket got everything, untouched
    assert slow_part == ["0", "close 1013"]  # the in-flight frame, then the close; the backlog was dropped
    assert slow_closed == 1
    assert clients == 1
    assert closing


def test_a_send_that_fails_because_the_peer_left_drops_the_socket_quietly() -> None:
    async def scenario() -> tuple[bool, int]:
        hub = make_hub()

        async def gone(message: dict[str, Any]) -> None:
            raise ConnectionResetError

        box = hub.outbox(gone)
        hub.broadcast("a")
        return box.closing, len(hub.clients)

    closing, clients = asyncio.run(scenario())
    assert closing
    assert clients == 0


def test_close_sends_queued_frames_first_and_nothing_after_it() -> None:
    async def scenario() -> list[str]:
        hub = make_hub(limit=5)
        send = FakeServerSend()
        box: Outbox = hub.outbox(send)
        send.writable.clear()
        box.text("identified")
        box.close(4403, "Forbidden")
        box.text("late")
        send.writable.set()
        await send.until(lambda: len(send.sent) >= 2)
        return texts(send.sent)

    assert asyncio.run(scenario()) == ["identified", "close 4403"]
