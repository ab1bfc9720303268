"""The broadcast shortcut, against a real uvicorn (`websockets-sansio`, in this process): a broadcast frame is
serialised once and written straight to every writable socket's transport, byte for byte the frame uvicorn's own
`send` writes; a socket whose transport is paused still goes through its Outbox queue and is closed with 1013 on
overflow; and with the shortcut off (or not applicable) every frame still arrives through the ASGI `send`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn

from ccsm_core.settings import Settings
from ccsm_gateway.hub import Hub, Outbox, direct_protocol, frame
from tests.gateway.rawclient import CLOSE, TEXT, RawSocket, close_code


@dataclasses.dataclass
class FakeKeyspace:
    prefix: str = "test:"


class HubApp:
    """A bare ASGI endpoint that registers every accepted socket with the hub, like the desktop socket does."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.opened: asyncio.Queue[Outbox] = asyncio.Queue()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        box = self.hub.outbox(send)
        self.opened.put_nowait(box)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            self.hub.discard(box)


@contextlib.asynccontextmanager
async def serving(hub: Hub) -> AsyncIterator[tuple[HubApp, int]]:
    app = HubApp(hub)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # clients may connect at once: the kernel holds them until uvicorn accepts
    config = uvicorn.Config(
        app,
        ws="websockets-sansio",
        lifespan="off",
        log_config=None,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield app, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


class Client:
    """A reading peer on the test's loop: raw frames off the wire, as sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> Client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connecting: fixes the window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        return cls(reader, writer)

    async def raw_frame(self) -> bytes:
        """The next frame's bytes exactly as on the wire (server frames are never masked)."""
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        extra = b""
        if length == 126:
            extra = await self.reader.readexactly(2)
            (length,) = struct.unpack("!H", extra)
        elif length == 127:
            extra = await self.reader.readexactly(8)
            (length,) = struct.unpack("!Q", extra)
        return head + extra + await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def text_frame(text: str) -> bytes:
    """RFC 6455 §5.2: FIN + text opcode, unmasked, the shortest length encoding, the UTF-8 payload."""
    payload = text.encode()
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    if len(payload) < 1 << 16:
        return bytes([0x81, 126]) + struct.pack("!H", len(payload)) + payload
    return bytes([0x81, 127]) + struct.pack("!Q", len(payload)) + payload


def make_hub(direct_writes: bool = True, limit: int = 3) -> Hub:
    return Hub(Settings(), FakeKeyspace(), queue_limit=limit, direct_writes=direct_writes)  # type: ignore[arg-type]


async def open_clients(app: HubApp, port: int, n: int) -> tuple[list[Client], list[Outbox]]:
    clients = [await Client.connect(port) for _ in range(n)]
    boxes = [await app.opened.get() for _ in range(n)]
    return clients, boxes


def run_broadcasts(direct_writes: bool, sockets: int, count: int) -> tuple[list[list[bytes]], list[str], Hub, bool]:
    async def scenario() -> tuple[list[list[bytes]], list[str], Hub, bool]:
        hub = make_hub(direct_writes)
        async with serving(hub) as (app, port):
            clients, boxes = await open_clients(app, port, sockets)
            applicable = all(box.direct is not None for box in boxes)
            texts = [frame(type="db-changed", reason=f"pool-execute {i}" + "é" * i * 7) for i in range(count)]
            for text in texts:
                hub.broadcast(text)
            received = [[await c.raw_frame() for _ in texts] for c in clients]
            for c in clients:
                await c.close()
        return received, texts, hub, applicable

    return asyncio.run(scenario())


def test_a_broadcast_reaches_every_socket_as_the_frame_uvicorn_would_have_written() -> None:
    received, texts, hub, applicable = run_broadcasts(direct_writes=True, sockets=40, count=30)
    expected = [text_frame(t) for t in texts]  # payloads from 60 bytes to past 126 (two-byte length)
    assert applicable
    assert all(frames == expected for frames in received)
    assert hub.direct_delivered == hub.delivered == 40 * 30
    first = orjson.loads(received[0][0][2:])
    assert list(first) == ["type", "reason", "ts"]
    assert first["type"] == "db-changed"


def test_with_the_shortcut_off_every_frame_still_arrives_through_the_asgi_send() -> None:
    received, texts, hub, applicable = run_broadcasts(direct_writes=False, sockets=10, count=30)
    assert not applicable
    assert all(frames == [text_frame(t) for t in texts] for frames in received)
    assert hub.direct_delivered == 0
    assert hub.delivered == 10 * 30


def test_the_shortcut_does_not_apply_to_a_send_it_cannot_see_through() -> None:
    async def wrapped(message: dict[str, Any]) -> None:
        return None

    class NotUvicorn:
        async def send(self, message: dict[str, Any]) -> None:
            return None

    assert direct_protocol(wrapped) is None
    assert direct_protocol(NotUvicorn().send) is None


def test_a_paused_socket_goes_through_its_queue_and_is_closed_with_1013_while_the_others_keep_receiving() -> None:
    padding = "x" * 4000

    async def scenario() -> tuple[list[list[bytes]], list[str], list[tuple[int, bytes]], Hub]:
        hub = make_hub(limit=3)
        async with serving(hub) as (app, port):
            slow = await asyncio.to_thread(RawSocket, port, "unused", 4096)  # never reads until the end
            slow_box = await app.opened.get()
            clients, _ = await open_clients(app, port, 5)
            texts: list[str] = []
            received: list[list[bytes]] = [[] for _ in clients]
            closed_at: int | None = None
            while closed_at is None or len(texts) < closed_at + 3:  # then three more broadcasts
                assert len(texts) < 20_000, "the paused socket was never dropped"
                texts.append(frame(type="db-changed", reason=f"{len(texts)} {padding}"))
                hub.broadcast(texts[-1])
                if closed_at is None and hub.slow_closed:
                    closed_at = len(texts)
                for client, frames in zip(clients, received, strict=True):
                    frames.append(await client.raw_frame())  # each fast peer drains every frame at once
            assert slow_box.closing
            slow_frames: list[tuple[int, bytes]] = []
            while not slow_frames or slow_frames[-1][0] != CLOSE:
                slow_frames.append(await asyncio.to_thread(slow.frame))
            slow.close()
            for c in clients:
                await c.close()
        return received, texts, slow_frames, hub

    received, texts, slow_frames, hub = asyncio.run(scenario())
    assert all(frames == [text_frame(t) for t in texts] for frames in received)
    assert hub.slow_closed == 1
    assert hub.direct_delivered > 0
    *backlog, (opcode, payload) = slow_frames
    assert close_code(payload) == 1013  # after what it had been sent, in order, and nothing after the close
    assert [data.decode() for _, data in backlog] == texts[: len(backlog)]
    assert all(op == TEXT for op, _ in backlog)
    assert opcode == CLOSE


def test_a_frame_the_socket_cannot_take_at_once_is_finished_by_the_transport_and_never_overtaken() -> None:
    big = frame(type="db-changed", reason="x" * 30_000)  # more than the buffers below, less than the high-water mark

    async def scenario() -> tuple[list[tuple[int, bytes]], int]:
        hub = make_hub()
        async with serving(hub) as (app, port):
            peer = await asyncio.to_thread(RawSocket, port, "unused", 4096)
            try:
                box = await app.opened.get()
                # A small send buffer on the server's side too, or the kernel takes the whole frame at once.
                box.direct.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                hub.broadcast(big)
                buffered = box.direct.transport.get_write_buffer_size()  # the rest waits on the transport
                # The peer reads what the kernel holds before the loop can flush the transport: the kernel has
                # room again, and the next frame must still queue behind the rest instead of going straight out.
                peer.sock.settimeout(10)
                peer.buffer += peer.sock.recv(65536)
                hub.broadcast(frame(type="db-changed", reason="after"))
                frames = [await asyncio.to_thread(peer.frame) for _ in range(2)]
            finally:
                peer.close()
        return frames, buffered

    frames, buffered = asyncio.run(scenario())
    assert buffered > 0
    assert frames[0] == (TEXT, big.encode())
    assert frames[1][0] == TEXT
    assert orjson.loads(frames[1][1])["reason"] == "after"
