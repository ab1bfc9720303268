"""Graceful shutdown of a real uvicorn process (runbook §8, contract-core §8.5), its signals, its start-up lines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop

from ccsm_core.lifecycle import Lifecycle
from ccsm_core.server import KEEP_ALIVE_DRAIN_S, GracefulServer, uvicorn_config
from ccsm_core.settings import Settings
from tests.harness import ROOT, LineReader, ServiceProcess, free_port

pytestmark = pytest.mark.slow


def start(settings: Settings, grace_ms: int, force_ms: int) -> ServiceProcess:
    return ServiceProcess(
        "tests.core.slow_service",
        settings,
        extra_env={
            "PYTHONPATH": str(ROOT),
            "SHUTDOWN_GRACE_MS": str(grace_ms),
            "SHUTDOWN_FORCE_MS": str(force_ms),
            "LOG_LEVEL": "info",
        },
    ).wait_started()


def request_in_thread(port: int, path: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            result["status"] = resp.status
            result["body"] = orjson.loads(resp.read())
        except Exception as exc:
            result["error"] = repr(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_sigterm_lets_an_in_flight_request_finish_and_exits_0(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    thread, result = request_in_thread(proc.port, "/slow?ms=1500")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    proc.wait_for_line("shutdown started")
    thread.join(20)
    assert result.get("status") == 200, result
    assert result["body"]["readyAtEnd"] == 503  # /ready turned 503 the moment the signal arrived
    assert proc.wait_exit(20) == 0
    messages = [e.get("msg") for e in proc.log_events()]
    assert "shutdown complete" in messages
    assert "closing resources" in messages


def test_new_connections_are_refused_once_shutdown_started(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    thread, _ = request_in_thread(proc.port, "/slow?ms=1500")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    proc.wait_for_line("Waiting for connections to close")  # logged after uvicorn closed its listeners
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        conn.request("GET", "/health")
    thread.join(20)
    assert proc.wait_exit(20) == 0


def test_a_request_still_running_at_the_force_limit_exits_1(settings: Settings) -> None:
    proc = start(settings, grace_ms=500, force_ms=1500)
    thread, result = request_in_thread(proc.port, "/slow?ms=20000")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit(15) == 1
    thread.join(10)
    assert result.get("status") == 503  # cancelled at the force limit, answered by the error table
    assert result["body"] == {"error": "Service unavailable"}
    messages = [e.get("msg") for e in proc.log_events()]
    assert "grace period elapsed with requests in flight" in messages
    assert "shutdown forced" in messages


def test_a_second_signal_does_not_cut_the_drain_short(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    thread, result = request_in_thread(proc.port, "/slow?ms=1500")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    proc.wait_for_line("shutdown started")
    proc.signal(signal.SIGINT)
    proc.wait_for_line("signal ignored, shutdown already in progress")
    thread.join(20)
    assert result.get("status") == 200
    assert proc.wait_exit(20) == 0


def test_an_idle_service_exits_0_promptly_on_sigint(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) == 0


# --- start-up lines (issue 16) -------------------------------------------------------------------------------


def test_the_start_up_line_comes_once_the_socket_is_bound_and_never_from_a_process_that_could_not_bind(
    settings: Settings,
) -> None:
    first = ServiceProcess("ccsm_api", settings).wait_started()
    try:
        first.wait_for_line("API HTTP server running on port")
        second = ServiceProcess("ccsm_api", settings, port=first.port)  # a second `make run` on a busy port
        assert second.wait_exit(30) == 3
    finally:
        first.stop()
    messages = [e.get("msg", "") for e in first.log_events()]
    running = messages.index(f"API HTTP server running on port {first.port}")
    assert messages.index(next(m for m in messages if m.startswith("Uvicorn running on"))) < running
    text = "\n".join(second.lines)
    assert "address already in use" in text
    assert "running on port" not in text  # before: "API HTTP server running on port ...", then exit 3


# --- signals under `uv run` (make run; issue 16) -----------------------------------------------------------


def uv_binary() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    assert Path(found).is_file(), "uv is missing: `make test` installs it (make uv)"
    return found


@dataclass
class UvRun:
    proc: subprocess.Popen[str]  # uv
    output: LineReader
    port: int

    def service_pid(self) -> int:
        match = re.search(r"Started server process \[(\d+)\]", self.output.wait_for("Started server process"))
        assert match is not None
        return int(match[1])


@contextlib.contextmanager
def under_uv_run(settings: Settings) -> Iterator[UvRun]:
    """The slow service as `make run` starts a service: `uv run python -m ...`, in its own process group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "JWT_", "REDIS_"))}
    env.update(settings.to_env())
    port = free_port()
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "info"})
    env.update({"PYTHONPATH": str(ROOT), "SHUTDOWN_GRACE_MS": "10000", "SHUTDOWN_FORCE_MS": "20000"})
    proc = subprocess.Popen(
        [uv_binary(), "run", "--frozen", "--no-sync", "python", "-m", "tests.core.slow_service"],
        cwd=str(ROOT / "tests"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = LineReader(proc, "uv run slow_service")
    try:
        output.wait_for("Uvicorn running on", 60)  # the socket is bound
        yield UvRun(proc, output, port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        output.close()


def signal_lines(output: LineReader) -> list[dict[str, Any]]:
    events = []
    for line in output.lines:
        with contextlib.suppress(orjson.JSONDecodeError):
            event = orjson.loads(line)
            if "signal" in event:
                events.append(event)
    return events


def test_one_sigterm_to_make_runs_process_group_starts_one_shutdown_and_names_the_forwarded_copy(
    settings: Settings,
) -> None:
    with under_uv_run(settings) as run:
        os.killpg(run.proc.pid, signal.SIGTERM)  # what the terminal's Ctrl+C or `kill -- -PGID` does
        assert run.proc.wait(30) == 0
        run.output.close()
    output = run.output
    events = signal_lines(output)
    assert events[0]["msg"] == "shutdown started"  # before: sometimes after "signal ignored ..."
    # The copy uv forwards (when it arrives as a separate signal) is named for what it is.
    assert all(
        e["msg"] == "duplicate SIGTERM ignored: the parent process forwards the signal it received" for e in events[1:]
    )
    assert all(e["parent"] == "uv" for e in events[1:])
    assert not [line for line in output.lines if "signal ignored, shutdown already in progress" in line]


def test_a_signal_forwarded_by_uv_after_the_shutdown_began_is_logged_as_a_duplicate(settings: Settings) -> None:
    with under_uv_run(settings) as run:
        thread, result = request_in_thread(run.port, "/slow?ms=3000")
        run.output.wait_for("slow request started")
        os.kill(run.service_pid(), signal.SIGTERM)  # the direct one
        run.output.wait_for("shutdown started")
        os.kill(run.proc.pid, signal.SIGTERM)  # uv's copy, forwarded to its child
        line = run.output.wait_for("duplicate SIGTERM ignored")
        thread.join(20)
        assert run.proc.wait(30) == 0
    event = orjson.loads(line)
    assert (event["parent"], event["senderPid"], event["parentPid"]) == ("uv", run.proc.pid, run.proc.pid)
    assert result.get("status") == 200  # the drain went on
    assert "signal ignored, shutdown already in progress" not in "\n".join(run.output.lines)


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


REQUEST = b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n"


async def idle_keep_alive_connection(
    settings: Settings, loop: str
) -> tuple[GracefulServer, asyncio.StreamReader, asyncio.StreamWriter]:
    """A GracefulServer in this loop, configured as serve() does, and a connection that has had one answer."""
    config = uvicorn_config(_ok, dataclasses.replace(settings, host="127.0.0.1", port=0), ws=False)  # type: ignore[arg-type]
    config.loop = loop
    config.lifespan = "off"
    server = GracefulServer(config, Lifecycle("test"), settings)
    config.load()
    server.lifespan = config.lifespan_class(config)  # what uvicorn's serve() sets up before startup()
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    return server, reader, writer


def run_in(loop: str, scenario: Any) -> Any:
    return (uvloop.run if loop == "uvloop" else asyncio.run)(scenario)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_request_sent_on_an_idle_keep_alive_connection_as_the_shutdown_starts_is_answered(
    settings: Settings, loop: str
) -> None:
    """A proxy reuses an idle keep-alive connection in the instant the shutdown starts: the request is in the
    socket buffer, not yet read. uvicorn alone closes that connection unread (a reset: a 502 for a POST behind
    nginx, Kludex/uvicorn#3124); the drain answers it, then closes the connection."""

    async def scenario() -> bytes:
        server, reader, writer = await idle_keep_alive_connection(settings, loop)
        with socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno())) as raw:
            raw.sendall(REQUEST)  # on the wire before the loop runs again: no await in between
        await server.shutdown()  # its first step runs now, before the loop has read the socket
        try:
            return await asyncio.wait_for(reader.read(), 5)  # what arrived meanwhile, then the close
        finally:
            writer.close()

    answer = run_in(loop, scenario())
    assert answer.startswith(b"HTTP/1.1 200"), answer  # answered in full (read() returned: then it was closed)
    assert answer.endswith(b"\r\n\r\nok")


def test_idle_keep_alive_connections_stay_open_a_moment_into_the_drain_and_answer_with_connection_close(
    settings: Settings,
) -> None:
    """A proxy still sending here during the drain gets answers with `Connection: close` (so it stops reusing
    the connection) rather than resets; a connection nobody uses closes after KEEP_ALIVE_DRAIN_S."""

    async def scenario() -> tuple[bytes, float]:
        server, reader, writer = await idle_keep_alive_connection(settings, "uvloop")
        port = server.servers[0].sockets[0].getsockname()[1]
        unused_reader, unused_writer = await asyncio.open_connection("127.0.0.1", port)
        unused_writer.write(REQUEST)
        await unused_reader.readuntil(b"ok")
        started = time.monotonic()
        shutdown = asyncio.ensure_future(server.shutdown())
        await asyncio.sleep(0.3)  # the proxy's next request comes a moment into the drain (pacing, not a wait)
        writer.write(REQUEST)
        answer = await asyncio.wait_for(reader.read(), 5)  # read() returns when the server closes
        assert await asyncio.wait_for(unused_reader.read(), 5) == b""
        unused_closed_after = time.monotonic() - started
        await shutdown
        writer.close()
        unused_writer.close()
        return answer, unused_closed_after

    answer, unused_closed_after = run_in("uvloop", scenario())
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert KEEP_ALIVE_DRAIN_S * 0.9 <= unused_closed_after < KEEP_ALIVE_DRAIN_S + 3
