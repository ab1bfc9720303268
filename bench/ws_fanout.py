"""ws-gateway benchmark (issues 6, 15): idle sockets and RSS per socket, RSS after they close, broadcast fan-out
latency at N = 1,000 and 15,000, and a 15,000-client reconnect storm; each compared with a bare `websockets` server
in the same run.

    flock /tmp/ccsm-bench.lock uv run python bench/ws_fanout.py [--clients 15000] [--workers 4]

One gateway process (`python -m ccsm_gateway`, the production server settings) on the machine's Redis with a
private key prefix. The load comes from several worker processes (a process may open at most 20,000 files here),
each holding its share of sockets with a lean asyncio client (raw frames, answers pings) so that the clients'
own parsing stays small next to the server's work. Each broadcast is a `db-changed` frame published on Redis
carrying its publish time; latency = receive time - publish time, per socket. The two servers are measured
broadcast by broadcast in turn, under the same background load. Gateway log: $TMPDIR/ccsm-bench-ws-gateway-<pid>.log.

The gateway runs as in production, on a scratch database of its own (migrated and seeded, dropped at the end), so
its upgrade-time user check is part of what is measured. Its socket caps are raised: every client here is one
user from one address, which production caps at WS_MAX_SOCKETS_PER_USER/ADDRESS.

The reconnect storm: every socket of one server is dropped at once, then all reconnect and identify at once; the
time until the last is identified. Each server's storm runs while the other server holds no sockets.
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
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api_common import cpu_seconds  # noqa: E402

from ccsm_core import migrations  # noqa: E402
from ccsm_core.tokens import TokenService  # noqa: E402
from tests.harness import create_test_database, free_port, make_settings, settings_env  # noqa: E402

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
    """One load process: its sockets per server port, and the latencies seen per broadcast sequence number."""

    def __init__(self) -> None:
        self.conns: dict[int, list[Lean]] = {}
        self.latencies: dict[int, list[float]] = {}
        self.waiters: dict[int, tuple[int, asyncio.Event]] = {}
        self.lost = 0

    def record(self, seq: Any, latency: float) -> None:
        if not isinstance(seq, int):
            return
        bucket = self.latencies.setdefault(seq, [])
        bucket.append(latency)
        waiter = self.waiters.get(seq)
        if waiter is not None and len(bucket) >= waiter[0]:
            waiter[1].set()

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
        self.conns.setdefault(port, []).extend(conns)
        if identify:
            done = await asyncio.gather(*(c.identified for c in conns if c.identified is not None))
            return max(done) - started
        return time.time() - started

    async def expect(self, seq: int, port: int, within: float) -> list[float]:
        want = len(self.conns.get(port, ()))
        event = asyncio.Event()
        self.waiters[seq] = (want, event)
        if len(self.latencies.get(seq, ())) >= want:
            event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)
        self.waiters.pop(seq, None)
        return self.latencies.pop(seq, [])

    def close_all(self, port: int | None = None) -> None:
        for p in [port] if port is not None else list(self.conns):
            for c in self.conns.pop(p, []):
                if c.transport is not None:
                    c.transport.abort()

    def count(self, port: int) -> int:
        return len(self.conns.get(port, ()))


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
                # start waiting before the orchestrator publishes
                task = loop.create_task(worker.expect(*args))
                conn.send("armed")
                conn.send(await task)
            elif command == "close":
                worker.close_all(*args)
                conn.send(None)
            elif command == "count":
                conn.send(worker.count(*args))
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


def settle_rss(pid: int, within_s: float = 30.0, steady_s: int = 8) -> int:
    """RSS once it has stopped falling for `steady_s` samples (the gateway gives memory back a few seconds after
    a burst of closes: ccsm_gateway.memory)."""
    deadline = time.monotonic() + within_s
    low, steady = rss_kib(pid), 0
    while time.monotonic() < deadline and steady < steady_s:
        time.sleep(1.0)  # sampling a process's RSS in a benchmark, not test synchronisation
        now = rss_kib(pid)
        steady = steady + 1 if now >= low - 256 else 0
        low = min(low, now)
    return low


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


def broadcast_once(
    pool: Pool, r: redis.Redis, channel: str, port: int, seq: int, server_pid: int
) -> tuple[list[float], float, float]:
    """One broadcast to one server's sockets: every socket's publish-to-receive latency (s), and the CPU time (s)
    the server and the client processes spent from the publish until every client had it."""
    for pipe in pool.pipes:
        pipe.send(("expect", (seq, port, 30.0)))
    for pipe in pool.pipes:
        assert pipe.recv() == "armed"
    clients = [proc.pid for proc in pool.procs if proc.pid is not None]
    server_before, clients_before = cpu_seconds(server_pid), sum(map(cpu_seconds, clients))
    t = time.time()
    r.publish(channel, orjson.dumps({"type": "db-changed", "reason": "bench", "ts": int(t * 1000), "seq": seq, "t": t}))
    latencies = [lat for pipe in pool.pipes for lat in pipe.recv()]
    return (
        latencies,
        cpu_seconds(server_pid) - server_before,
        sum(map(cpu_seconds, clients)) - clients_before,
    )


def summarise(runs: list[list[float]], expected: int) -> dict[str, float]:
    pooled = sorted(lat for run in runs for lat in run)
    short = [len(run) for run in runs if len(run) < expected]
    if short:
        print(f"  ! some broadcasts reached only {short} of {expected} sockets", flush=True)
    q = statistics.quantiles(pooled, n=100, method="inclusive")
    return {
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "all_ms": statistics.median(max(run) for run in runs) * 1000,  # until the last socket had it
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=15_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    prefix = f"ccsm-bench-{run}:"
    settings = make_settings(redis_prefix=prefix, log_level="warning", db_name=f"ccsm_bench_{run}")
    create_test_database(settings)
    gw_channel = prefix + "events:db-changed"
    bare_channel = prefix + "bench:bare"
    token = TokenService(settings.jwt_secret).issue(2, 2, "mreyes")
    r = redis.Redis.from_url(settings.redis_url)
    gw_port, bare_port = free_port(), free_port()

    caps = str(2 * args.clients)  # see the module docstring
    env = {
        **os.environ,
        **settings_env(settings),
        "PORT": str(gw_port),
        "HOST": "127.0.0.1",
        "WS_MAX_SOCKETS_PER_USER": caps,
        "WS_MAX_SOCKETS_PER_ADDRESS": caps,
    }
    log_path = Path(tempfile.gettempdir()) / f"ccsm-bench-ws-gateway-{os.getpid()}.log"
    log_file = log_path.open("w")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ccsm_gateway"],
        env=env,
        cwd=str(ROOT / "tests"),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    bare = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "ws_bare_server.py"), str(bare_port), settings.redis_url, bare_channel],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers = {"gateway": (gw_port, gateway, gw_channel), "bare websockets": (bare_port, bare, bare_channel)}
    pool = Pool(args.workers)
    try:
        wait_ready(gw_port, gateway)
        wait_ready(bare_port, bare, path=None)
        base = {name: rss_kib(proc.pid) for name, (_, proc, _) in servers.items()}
        opened = 0
        seq = 0
        summary: dict[str, dict[str, float]] = {}
        for target in (args.small, args.clients):
            per = split(target - opened, args.workers)
            for name, (port, proc, _) in servers.items():
                t = time.time()
                pool.call("open", [(port, n, token, 2, 200, False) for n in per])
                rss = rss_kib(proc.pid)
                per_socket = (rss - base[name]) / target
                summary[f"{name}/rss"] = {"kib": per_socket}
                print(
                    f"{name}: {target} sockets open in {time.time() - t:.1f}s; RSS {rss / 1024:.0f} MiB "
                    f"({per_socket:.1f} KiB/socket over the idle process)",
                    flush=True,
                )
            opened = target
            # Alternate the two servers broadcast by broadcast, so both see the same background load.
            runs: dict[str, list[list[float]]] = {name: [] for name in servers}
            cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
            for _ in range(PUBLISHES_PER_POINT):
                for name, (port, proc, channel) in servers.items():
                    latencies, server_cpu, clients_cpu = broadcast_once(pool, r, channel, port, seq, proc.pid)
                    runs[name].append(latencies)
                    cpu[name].append((server_cpu, clients_cpu))
                    seq += 1
            for name in servers:
                stats = summarise(runs[name], opened)
                stats["server_cpu_ms"] = statistics.median(c[0] for c in cpu[name]) * 1000
                stats["clients_cpu_ms"] = statistics.median(c[1] for c in cpu[name]) * 1000
                summary[f"{name}/{opened}"] = stats
                print(
                    f"{name}: fan-out to {opened}: all received in {stats['all_ms']:.0f} ms (median of "
                    f"{PUBLISHES_PER_POINT}); p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms; CPU per "
                    f"broadcast: server {stats['server_cpu_ms']:.0f} ms, clients {stats['clients_cpu_ms']:.0f} ms",
                    flush=True,
                )
        g, b = summary[f"gateway/{opened}"], summary[f"bare websockets/{opened}"]
        print(
            f"ratios at {opened} (gateway / bare websockets): p99 {g['p99_ms'] / b['p99_ms']:.2f}, all-received "
            f"{g['all_ms'] / b['all_ms']:.2f}, RSS/socket "
            f"{summary['gateway/rss']['kib'] / summary['bare websockets/rss']['kib']:.2f}",
            flush=True,
        )
        # The clients' CPU shares the machine's cores with the server's: the last sockets cannot have the frame
        # before the CPU both sides spent on the broadcast, spread over every core, has been spent (a lower bound
        # for this run, not for another machine, where the clients would have cores of their own).
        cores = len(os.sched_getaffinity(0))
        floor = (g["server_cpu_ms"] + g["clients_cpu_ms"]) / cores
        clients_only = g["clients_cpu_ms"] / cores
        print(
            f"floor at {opened} on {cores} cores: (gateway CPU + clients' CPU) / cores = {floor:.0f} ms = "
            f"{floor / b['p99_ms']:.2f}x bare's p99; the clients' CPU alone / cores = {clients_only:.0f} ms = "
            f"{clients_only / b['p99_ms']:.2f}x",
            flush=True,
        )
        # The reconnect storm on each server, the other holding no sockets meanwhile.
        storms: dict[str, float] = {}
        for port, _, _ in servers.values():
            pool.all("close", port)
        for name, (port, proc, _) in servers.items():
            after = settle_rss(proc.pid)
            print(
                f"{name}: RSS {after / 1024:.0f} MiB after its {opened} sockets closed "
                f"(idle process {base[name] / 1024:.0f} MiB: {(after - base[name]) / 1024:+.0f} MiB)",
                flush=True,
            )
            t = time.time()
            took = pool.call("open", [(port, n, token, 2, 100_000, True) for n in split(opened, args.workers)])
            storms[name] = max(took)
            print(
                f"{name}: reconnect storm: {opened} sockets reconnected and identified in {storms[name]:.1f} s "
                f"(wall {time.time() - t:.1f} s)",
                flush=True,
            )
            pool.all("close", port)
        print(f"ratio reconnect storm (gateway / bare websockets): {storms['gateway'] / storms['bare websockets']:.2f}")
    finally:
        pool.stop()
        for p in (gateway, bare):
            p.terminate()
            p.wait(30)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)
        r.close()
        migrations.drop_database(settings, settings.db_name)


if __name__ == "__main__":
    main()
