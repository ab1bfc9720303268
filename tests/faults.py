"""A TCP proxy the tests put between a service and MariaDB or Redis, to break the network on purpose.

The machine's MariaDB and Redis are shared with everything else running here, so drills never stop them:
they cut, blackhole or slow down this proxy instead, which is what a service sees when its database
disappears (connection refused / reset), hangs (a blackholed route) or slows down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. Modes: `up` (forward), `down` (refuse/reset), `blackhole`
    (accept and never answer). `delay_s` adds latency to every chunk from the target (slow database)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "up"
        self.delay_s = 0.0
        self.connections_accepted = 0
        self.chunks_up = 0  # client -> target writes forwarded (≈ queries/commands sent)
        self._progress = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, sock=self._sock))
        self._started.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        if self.mode == "down":
            writer.transport.abort()
            return
        self._writers.add(writer)
        if self.mode == "blackhole":
            with contextlib.suppress(Exception):
                await reader.read()  # hold the connection open, answer nothing
            self._writers.discard(writer)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
            with contextlib.suppress(Exception):  # a reset on either side just ends this direction
                while data := await src.read(65536):
                    if not slow:
                        with self._progress:
                            self.chunks_up += 1
                            self._progress.notify_all()
                    if slow and self.delay_s:
                        await asyncio.sleep(self.delay_s)  # injected latency, the fault under test
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._writers.discard(writer)
        self._writers.discard(up_writer)

    def wait_for_chunks_up(self, count: int, timeout: float = 10.0) -> None:
        """Block until `count` client->target writes have been forwarded in total (requests on the wire)."""
        with self._progress:
            if not self._progress.wait_for(lambda: self.chunks_up >= count, timeout):
                raise TimeoutError(f"only {self.chunks_up} chunks forwarded, wanted {count}")

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def _drop_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def down(self) -> None:
        """Refuse new connections and reset the open ones (the database went away)."""
        self.mode = "down"
        self._call(self._drop_all)

    def blackhole(self) -> None:
        """Accept connections and never answer; reset the open ones (a route that drops packets)."""
        self.mode = "blackhole"
        self._call(self._drop_all)

    def up(self) -> None:
        self.mode = "up"

    def close(self) -> None:
        async def stop() -> None:
            self._drop_all()
            if self._server is not None:
                self._server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@contextlib.contextmanager
def proxy(host: str, port: int) -> Iterator[TcpProxy]:
    p = TcpProxy(host, port)
    try:
        yield p
    finally:
        p.close()
