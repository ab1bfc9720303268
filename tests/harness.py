"""What the tests share: settings for this run's own database and Redis prefix, the fixture data, and real
service processes (uvicorn under `python -m <service>`) started on free loopback ports.

Waiting is event-driven: a process is ready when uvicorn prints "Uvicorn running on" (lifespan done, socket bound);
a test that needs to wait for something else reads the process's log lines until they say so, with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from ccsm_core import migrations
from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SEED_SQL = (ROOT / "fixtures" / "seed.sql").read_text(encoding="utf-8")
RUN_ID = uuid.uuid4().hex[:10]
TEST_DB = f"ccsm_test_{RUN_ID}"
TEST_PREFIX = f"ccsm-test-{RUN_ID}:"
JWT_SECRET = secrets.token_urlsafe(48)

# Seed credentials (fixtures/seed.sql header).
ADMIN = {"username": "admin", "password": "Admin#2025"}
EMPLOYEE = {"username": "mreyes", "password": "Employee#2025"}
CUSTOMER = {"username": "pwcourt", "password": "Customer#2025"}


def make_settings(**overrides: Any) -> Settings:
    """Settings for this test run: its own database and Redis prefix, auth on, a strong random secret."""
    values: dict[str, Any] = {
        "service": "test",
        "node_env": "local",
        "db_host": os.environ.get("DB_HOST", "127.0.0.1"),
        "db_port": int(os.environ.get("DB_PORT", "3306")),
        "db_user": os.environ.get("DB_USER", "root"),
        "db_password": os.environ.get("DB_PASSWORD", ""),
        "db_name": TEST_DB,
        "redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "redis_prefix": TEST_PREFIX,
        "auth_required": True,
        "jwt_secret": JWT_SECRET,
        "cors_origins": ("https://portal.example.com",),
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `load_settings` produce `settings` (for service subprocesses)."""
    return settings.to_env()


def create_test_database(settings: Settings) -> None:
    migrations.drop_database(settings, settings.db_name)
    migrations.create_database(settings)
    migrations.migrate(settings)
    reseed(settings)


def drop_run_data(settings: Settings) -> None:
    """Drop what a run created: its database and its Redis keys (never anyone else's)."""
    migrations.drop_database(settings, settings.db_name)
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=settings.redis_prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def reseed(settings: Settings) -> None:
    """Empty every table and load the seed again (tests that write start from the known data)."""
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'"
        )
        tables = [str(r[0]) for r in cur.fetchall()]
        cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in tables:
            cur.execute(f"DELETE FROM `{table}`")  # noqa: S608 - names come from information_schema
            cur.execute(f"ALTER TABLE `{table}` AUTO_INCREMENT = 1")
        cur.execute("SET FOREIGN_KEY_CHECKS = 1")
    finally:
        conn.close()
    migrations.load_script(settings, SEED_SQL)


def close_code(ws: ClientConnection) -> int | None:
    """Read a WebSocket until the server closes it; the close code the server sent (None: no close frame)."""
    try:
        while True:
            ws.recv(timeout=10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LineReader:
    """A process's output lines, read on a thread: `wait_for` blocks on them with a deadline (never a sleep)."""

    def __init__(self, proc: subprocess.Popen[str], label: str) -> None:
        self.proc = proc
        self.label = label
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """Block until a line containing `text` appears (lines already seen count)."""
        for line in self.lines:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: no line containing {text!r}; last lines: {self.lines[-15:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.label} exited ({self.proc.poll()}) before {text!r}: {self.lines[-15:]}")
            self.lines.append(line)
            if text in line:
                return line

    def close(self) -> None:
        """After the process has exited: stop reading and keep every line it printed."""
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)


class ServiceProcess:
    """A service run as a real process: `python -m <module>` with the environment of `settings`."""

    def __init__(
        self,
        module: str,
        settings: Settings,
        extra_env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.module = module
        self.port = port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "JWT_", "REDIS_"))}
        env.update(settings_env(settings))
        # info level: readiness is read from uvicorn's "Uvicorn running on" line
        env.update({"PORT": str(self.port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "info"})
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=str(ROOT / "tests"),  # no stray .env files are read from here
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = LineReader(self.proc, module)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def lines(self) -> list[str]:
        return self.output.lines

    def wait_for_line(self, text: str, timeout: float = 15.0) -> str:
        """Block until a log line containing `text` appears (lines already seen count)."""
        return self.output.wait_for(text, timeout)

    def wait_started(self, timeout: float = 20.0) -> ServiceProcess:
        """Wait until uvicorn says the socket is bound; a process that never gets there is killed, so a failed
        start never leaves an orphan behind (the caller's clean-up would not run)."""
        try:
            self.wait_for_line("Uvicorn running on", timeout)
        except BaseException:
            self.proc.kill()
            self.wait_exit(10)
            raise
        return self

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.lines:
            with contextlib.suppress(orjson.JSONDecodeError):
                events.append(orjson.loads(line))
        return events

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 40.0) -> int:
        code = self.proc.wait(timeout)
        self.output.close()
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                return self.wait_exit(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


@contextlib.contextmanager
def running(module: str, settings: Settings, extra_env: Mapping[str, str] | None = None) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(module, settings, extra_env).wait_started()
    try:
        yield proc
    finally:
        proc.stop()
