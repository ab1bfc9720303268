"""What the api benchmarks share: a throw-away migrated + seeded database read through its own MariaDB user (so
MariaDB's per-user statistics count exactly this benchmark's queries), real server processes, a minimal
keep-alive HTTP/1.1 client (httpx would cost more client CPU than the server being measured), percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ccsm_core import migrations  # noqa: E402
from ccsm_core.db import connect_sync  # noqa: E402
from ccsm_core.settings import Settings  # noqa: E402
from ccsm_core.tokens import DESKTOP_SCOPE, TokenService  # noqa: E402
from tests import harness  # noqa: E402

RUN = secrets.token_hex(4)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else float("nan")


@contextlib.contextmanager
def bench_database() -> Iterator[Settings]:
    """A fresh database with the dev seed, a MariaDB user of its own, and `userstat` on for the run."""
    root = harness.make_settings(db_name=f"ccsm_bench_{RUN}", redis_prefix=f"ccsm-bench-{RUN}:")
    migrations.drop_database(root, root.db_name)
    migrations.create_database(root)
    migrations.migrate(root)
    migrations.load_script(root, (ROOT / "fixtures" / "seed.sql").read_text(encoding="utf-8"))
    user, password = f"bench_{RUN}", secrets.token_urlsafe(16)
    conn = connect_sync(root)
    cur = conn.cursor()
    cur.execute("SELECT @@GLOBAL.userstat")
    userstat_before = int(cur.fetchone()[0])  # type: ignore[index]
    cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    cur.execute(f"GRANT ALL ON `{root.db_name}`.* TO '{user}'@'%'")
    cur.execute("SET GLOBAL userstat = 1")
    try:
        yield dataclasses.replace(root, db_user=user, db_password=password, db_acquire_timeout_s=60.0)
    finally:
        cur.execute(f"DROP USER '{user}'@'%'")
        cur.execute(f"SET GLOBAL userstat = {userstat_before}")
        conn.close()
        migrations.drop_database(root, root.db_name)


def db_commands(settings: Settings) -> dict[str, int]:
    """The bench user's statement counters (information_schema.USER_STATISTICS, MariaDB's userstat plugin)."""
    conn = connect_sync(harness.make_settings(db_name=""))
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT SELECT_COMMANDS, UPDATE_COMMANDS, OTHER_COMMANDS FROM information_schema.USER_STATISTICS "
            "WHERE USER = %s",
            (settings.db_user,),
        )
        row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return {"select": 0, "update": 0, "other": 0}
    return {"select": int(row[0]), "update": int(row[1]), "other": int(row[2])}


def token(settings: Settings, user_id: int, role: int, login: str, desktop: bool = False) -> str:
    """A token as the auth service issues it: `desktop` for an auth-code login's (valid on /api/desktop/* only)."""
    return TokenService(settings.jwt_secret).issue(user_id, role, login, scope=DESKTOP_SCOPE if desktop else None)


def cpu_seconds(pid: int) -> float:
    """user + system CPU time process `pid` has used so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process on a free port, started with `settings`' environment; ready at uvicorn's start line."""

    def __init__(
        self,
        args: list[str],
        settings: Settings,
        extra_env: dict[str, str] | None = None,
        root: Path = ROOT,
        python: str = sys.executable,
    ) -> None:
        """`root` is the checkout whose code runs (another commit's worktree for a baseline), with `python` (that
        checkout's own environment)."""
        self.port = harness.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "JWT_", "REDIS_"))}
        env.update(harness.settings_env(settings))
        env.update({"PORT": str(self.port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "info"})
        env.update(extra_env or {})
        env["PYTHONPATH"] = str(root)
        # The server's log goes to a file, not through a pipe this process would have to drain: a reader thread
        # here would compete with the load generator for the GIL on every access-log line.
        self.log = tempfile.NamedTemporaryFile(prefix="ccsm-bench-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [python, *args], cwd=str(root / "tests"), env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while b"running on http" not in Path(self.log.name).read_bytes().lower():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class Conn:
    """One keep-alive HTTP/1.1 connection (Content-Length responses only, which is all these servers send)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
        return cls(reader, writer)

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("POST", "PUT"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data

    def close(self) -> None:
        self.writer.close()


def run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def now() -> float:
    return time.perf_counter()
