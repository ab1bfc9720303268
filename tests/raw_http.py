"""HTTP/1.1 on a raw socket, for requests no client library would send (malformed, oversized, slow, duplicated
headers) and for reading exactly what came back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

import orjson


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return values[0] if values else None

    def json(self) -> object:
        return orjson.loads(self.body)


def parse(raw: bytes) -> RawResponse:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no complete response head in {raw[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    _, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    length = next((int(v) for k, v in headers if k == "content-length"), None)
    body = rest if length is None else rest[:length]
    return RawResponse(int(status), reason[0] if reason else "", headers, body, raw)


def read_response(sock: socket.socket) -> RawResponse:
    """Read one response: its head, then Content-Length bytes (or until the peer closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return parse(data)
        data += chunk
    response = parse(data)
    length = response.header("content-length")
    while length is not None and len(response.body) < int(length):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        response = parse(data)
    return response


def exchange(address: tuple[str, int], request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send `request` (all of it, from a thread, so an answer that comes before the end is still read) and read
    one response."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sender = threading.Thread(target=send_ignoring_reset, args=(sock, request), daemon=True)
        sender.start()
        try:
            return read_response(sock)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(timeout)


def send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    """Send until done or until the server stops reading (it answered early and closed)."""
    view = memoryview(data)
    try:
        while view:
            sent = sock.send(view[: 1 << 20])
            view = view[sent:]
    except OSError:
        pass


@dataclass
class Held:
    held_s: float
    answer: bytes
    still_open: bool = False  # the deadline came first


async def hold(port: int, first: bytes, drip: bytes | None, deadline_s: float) -> Held:
    """Connect, send `first`, then `drip` once a second (slowloris) or nothing; how long from the connection
    until the server closed it, and what it said."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(first)
    answer = b""
    still_open = False
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                if time.monotonic() - started > deadline_s:
                    still_open = True
                    break
                if drip is not None:
                    writer.write(drip)
                continue
            if not chunk:
                break
            answer += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return Held(time.monotonic() - started, answer, still_open)


def hold_many(port: int, count: int, first: bytes, drip: bytes | None, deadline_s: float) -> list[Held]:
    """`count` connections at once, each as `hold`."""

    async def main() -> list[Held]:
        return await asyncio.gather(*(hold(port, first, drip, deadline_s) for _ in range(count)))

    return asyncio.run(main())
