"""ws-gateway benchmark (issue 6): idle sockets and RSS per socket, broadcast fan-out latency at N = 1,000 and
15,000, and a 15,000-client reconnect storm; the fan-out compared with a bare `websockets` server in the same run.

    flock /tmp/ccsm-bench.lock uv run python bench/ws_fanout.py [--clients 15000] [--workers 4]

One gateway process (`python -m ccsm_gateway`, the production server settings) on the machine's Redis with a
private key prefix. The load comes from several worker processes (a process may open at most 20,000 files here),
each holding its share of sockets with a lean asyncio client (raw frames, answers pings) so that the clients'
own parsing stays small next to the server's work. Each broadcast is a `db-changed` frame published on Redis
carrying its publish time; latency = receive time - publish time, per socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ccsm_core.tokens import TokenService  # noqa: E402
from tests.harness import free_port, make_settings, settings_env  # noqa: E402

PUBLISHES_PER_POINT = 5


# --- the load generator (runs in worker processes) ------------------------------------------------------------


class Lean(asyncio.Protocol):
    """A minimal WebSocket client: handshake, unmasked server frames parsed by hand, pings answered."""

    def __init__(self, worker: Worker, request: bytes, identify: bytes | None) -> None:
        self.worker = worker
        self.request = request
        self.identify = identify
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.identified: asyncio.Future[float] | None = asyncio.get_running_loop().create_future() if identify else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.lost += 1
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("lost before upgrade"))
        if self.identified is not None and not self.identified.done():
            self.identified.set_exception(ConnectionError("lost before identified"))
            self.identified.exception()  # a retried attempt's future: nobody awaits it

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(buf[:40].decode(errors="replace")))
                return
            self.upgraded = True
            buf = buf[end + 4 :]
        while len(buf) >= 2:
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    break
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + length:
                break
            self.frame(buf[0] & 0x0F, buf[offset : offset + length])
            buf = buf[offset + length :]
        self.buf = buf

    def frame(self, opcode: int, payload: bytes) -> None:
        now = time.time()
        if opcode == 0x9 and self.transport is not None:  # ping -> masked pong (zero mask)
            self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload)
        elif opcode == 0x1:
            if payload.startswith(b'{"type":"db-changed"'):
                event = orjson.loads(payload)
                self.worker.record(event.get("seq"), now - event.get("t", now))
            elif payload.startswith(b'{"type":"connected"'):
                if not self.opened.done():
                    self.opened.set_result(None)
                if self.identify is not None and self.transport is not None:
                    self.transport.write(self.identify)
            elif (
                payload.startswith(b'{"type":"identified"')
                and self.identified is not None
                and not self.identified.done()
            ):
                self.identified.set_result(now)


def masked_text(text: bytes) -> bytes:
    assert len(text) < 126
    return bytes([0x81, 0x80 | len(text)]) + b"\x00\x00\x00\x00" + text


class Worker:
    def __init__(self) -> None:
        self.conns: list[Lean] = []
        self.latencies: dict[int, list[float]] = {}
        self.waiters: dict[int, asyncio.Event] = {}
        self.lost = 0

    def record(self, seq: Any, latency: float) -> None:
        if not isinstance(seq, int):
            return
        bucket = self.latencies.setdefault(seq, [])
        bucket.append(latency)
        if len(bucket) >= len(self.conns) and seq in self.waiters:
            self.waiters[seq].set()

    async def open_many(self, port: int, n: int, token: str, user_id: int, concurrency: int, identify: bool) -> float:
        loop = asyncio.get_running_loop()
        request = (
            f"GET /ws/desktop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        ident = masked_text(orjson.dumps({"type": "identify", "userId": user_id})) if identify else None
        gate = asyncio.Semaphore(concurrency)

        async def one() -> Lean:
            async with gate:
                for attempt in range(20):
                    try:
                        _, proto = await loop.create_connection(lambda: Lean(self, request, ident), "127.0.0.1", port)
                        await asyncio.wait_for(proto.opened, 60)
                        return proto
                    except (ConnectionError, OSError, TimeoutError):
                        await asyncio.sleep(0.05 * (attempt + 1))  # a refused SYN under a storm: retry
                raise ConnectionError("could not connect")

        started = time.time()
        conns = await asyncio.gather(*(one() for _ in range(n)))
        self.conns.extend(conns)
        if identify:
            done = await asyncio.gather(*(c.identified for c in conns if c.identified is not None))
            return max(done) - started
        return time.time() - started

    async def expect(self, seq: int, within: float) -> list[float]:
        event = self.waiters.setdefault(seq, asyncio.Event())
        if len(self.latencies.get(seq, ())) >= len(self.conns):
            event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)
        return self.latencies.pop(seq, [])

    def close_all(self) -> None:
        for c in self.conns:
            if c.transport is not None:
                c.transport.abort()
        self.conns = []


def worker_main(conn: Connection) -> None:
    import uvloop

    async def serve() -> None:
        worker = Worker()
        loop = asyncio.get_running_loop()
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "open":
                conn.send(await worker.open_many(*args))
            elif command == "expect":
                conn.send(await worker.expect(*args))
            elif command == "close":
                worker.close_all()
                conn.send(len(worker.conns))
            elif command == "count":
                conn.send(len(worker.conns))
            elif command == "quit":
                worker.close_all()
                conn.send(None)
                return

    uvloop.run(serve())


# --- the orchestrator -----------------------------------------------------------------------------------------


class Pool:
    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child,), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def call(self, command: str, per_worker: list[tuple[Any, ...]]) -> list[Any]:
        for pipe, args in zip(self.pipes, per_worker, strict=True):
            pipe.send((command, args))
        return [pipe.recv() for pipe in self.pipes]

    def all(self, command: str, *args: Any) -> list[Any]:
        return self.call(command, [args] * len(self.pipes))

    def stop(self) -> None:
        self.all("quit")
        for p in self.procs:
            p.join(10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def wait_ready(port: int, proc: subprocess.Popen[bytes], path: str | None = "/ready") -> None:
    import http.client

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            if path is None:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=1):
                    return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)  # start-up polling in a benchmark, not test synchronisation
    raise RuntimeError("server not ready")


def fanout(pool: Pool, r: redis.Redis, channel: str, seq0: int) -> dict[str, float]:
    """PUBLISHES_PER_POINT broadcasts, one at a time; latency percentiles over every (socket, broadcast)."""
    all_latencies: list[float] = []
    completes: list[float] = []
    expected = sum(pool.all("count"))
    for k in range(PUBLISHES_PER_POINT):
        seq = seq0 + k
        for pipe in pool.pipes:
            pipe.send(("expect", (seq, 30.0)))
        t = time.time()
        event = {"type": "db-changed", "reason": "bench", "ts": int(t * 1000), "seq": seq, "t": t}
        r.publish(channel, orjson.dumps(event))
        got = [lat for pipe in pool.pipes for lat in pipe.recv()]
        if len(got) < expected:
            print(f"  ! broadcast {seq}: {len(got)}/{expected} sockets received it", flush=True)
        all_latencies.extend(got)
        completes.append(max(got) if got else float("nan"))
    all_latencies.sort()
    q = statistics.quantiles(all_latencies, n=100, method="inclusive")
    return {
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "all_ms": statistics.median(completes) * 1000,  # time until the last socket had it (median of runs)
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=15_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    prefix = f"ccsm-bench-{uuid.uuid4().hex[:8]}:"
    settings = make_settings(redis_prefix=prefix, log_level="warning")
    channel = prefix + "events:db-changed"
    token = TokenService(settings.jwt_secret).issue(2, 2, "mreyes")
    r = redis.Redis.from_url(settings.redis_url)
    results: dict[str, Any] = {}
    gw_port, bare_port = free_port(), free_port()

    env = {**os.environ, **settings_env(settings), "PORT": str(gw_port), "HOST": "127.0.0.1"}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ccsm_gateway"],
        env=env,
        cwd=str(ROOT / "tests"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bare = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "ws_bare_server.py"), str(bare_port), settings.redis_url, channel],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pool = Pool(args.workers)
    try:
        wait_ready(gw_port, gateway)
        wait_ready(bare_port, bare, path=None)
        seq = 0
        for name, port, proc in (("gateway", gw_port, gateway), ("bare websockets", bare_port, bare)):
            print(f"== {name}", flush=True)
            base = rss_kib(proc.pid)
            opened = 0
            for target in (args.small, args.clients):
                per = split(target - opened, args.workers)
                t = time.time()
                pool.call("open", [(port, n, token, 2, 200, False) for n in per])
                opened = target
                rss = rss_kib(proc.pid)
                per_conn = (rss - base) * 1024 / opened / 1024
                print(
                    f"  {opened} sockets open in {time.time() - t:.1f}s; RSS {rss / 1024:.0f} MiB "
                    f"({per_conn:.1f} KiB/socket over the idle process)",
                    flush=True,
                )
                stats = fanout(pool, r, channel, seq)
                seq += PUBLISHES_PER_POINT
                print(
                    f"  fan-out to {opened}: all received in {stats['all_ms']:.0f} ms; "
                    f"p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms",
                    flush=True,
                )
                results[f"{name}/{opened}"] = {**stats, "rss_kib_per_socket": per_conn}
            # the reconnect storm (every socket dropped, then all reconnect and identify at once); the gateway only:
            # the bare server took 75-140 s here, which would push a run past its 4 minutes
            pool.all("close")
            if name != "gateway":
                continue
            t = time.time()
            took = pool.call("open", [(port, n, token, 2, 100_000, True) for n in split(opened, args.workers)])
            print(
                f"  reconnect storm: {opened} sockets reconnected and identified in "
                f"{max(took):.1f} s (wall {time.time() - t:.1f} s)",
                flush=True,
            )
            results[f"{name}/storm_s"] = max(took)
            pool.all("close")
        g, b = results[f"gateway/{args.clients}"], results[f"bare websockets/{args.clients}"]
        print(
            f"== ratios at {args.clients} (gateway / bare websockets): p99 {g['p99_ms'] / b['p99_ms']:.2f}, "
            f"all-received {g['all_ms'] / b['all_ms']:.2f}, RSS/socket "
            f"{g['rss_kib_per_socket'] / b['rss_kib_per_socket']:.2f}",
            flush=True,
        )
    finally:
        pool.stop()
        for p in (gateway, bare):
            p.terminate()
            p.wait(30)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)
        r.close()


if __name__ == "__main__":
    main()
