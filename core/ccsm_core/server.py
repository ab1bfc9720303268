"""Run one app under uvicorn with the shutdown the runbook asks for (§8; contract-core §8.5).

SIGTERM/SIGINT: `/ready` turns 503 at once; the listeners close (no new connections); idle keep-alive
connections close after `KEEP_ALIVE_DRAIN_S` (1 s), a request arriving on one meanwhile answered with
`Connection: close` (DrainingHttpProtocol); WebSockets get close code 1012 (uvicorn's shutdown, fix 6) so
desktops reconnect to another task; in-flight requests finish. At `SHUTDOWN_GRACE_MS` a line reports what is
still running; at `SHUTDOWN_FORCE_MS` what remains is cancelled and the process exits 1. A clean drain exits 0.
Later signals are ignored, as in the old backend. A watchdog thread guarantees the exit even if a cancelled task
will not die.

Signals are taken by one thread with sigwaitinfo(2) (SIGTERM and SIGINT are blocked in every other thread, and
in any child process the service might start): one at a time, in arrival order, with the sender's pid. So
"shutdown started" is always the first line of a shutdown, and the copy of a signal that a parent such as
`uv run` forwards to its child (under `make run` the terminal or `kill` reaches both) is logged as what it is.

The protocols (`ccsm_core.protocols`) bound what one connection may cost; a service's start-up lines are logged
once its socket is bound, so a second `make run` on a busy port never claims to be running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from ccsm_core.edge import ErrorResponses
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.protocols import ConnectionGuard, HttpProtocol, ServiceConfig
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.server")

# The ALB's idle timeout defaults to 60 s; an upstream that closes idle keep-alive connections first makes the
# ALB answer 502 (AWS: "HTTP 502: target closed the connection", ALB troubleshooting guide). Stay above it.
KEEP_ALIVE_S = 75
WS_MAX_FRAME = 64 * 1024  # fix 6: frames capped at 64 KiB
WS_PING_INTERVAL_S = 30.0  # contract-core §8.7: a protocol ping every 30 s; a peer silent for 30 s more is dropped
WATCHDOG_MARGIN_S = 2.0
# After the 1012 close, a healthy peer's socket is gone in milliseconds (the close frame only has to reach its
# kernel). One still open after this is not reading (a vanished desktop): its unsent bytes would hold a graceful
# close, and so the whole shutdown, until the force limit. It is aborted instead.
WS_CLOSE_WAIT_S = 2.0
# MAX_CONNECTIONS=0: a service answering short HTTP requests rarely holds more than a few hundred connections
# (the ALB reuses them); one holding WebSockets holds one per desktop (`make bench-ws` opens 15,000 on one
# process). At HEADER_LIMIT_BYTES (32 KiB) per unfinished head, 18,000 connections stay within the gateway
# task's 1 GiB even if every one of them is an attacker's.
HTTP_MAX_CONNECTIONS = 2048
WS_MAX_CONNECTIONS = 18000
# Descriptors kept for everything else: the listener, the pools, Redis, lingering refused sockets (LINGER_MAX).
FD_RESERVE = 512
HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# How long an idle keep-alive connection stays open once the shutdown began (DrainingHttpProtocol).
KEEP_ALIVE_DRAIN_S = 1.0


class DrainingHttpProtocol(HttpProtocol):
    """HttpProtocol (the head limits, the connection cap), except for what a shutdown does to an idle keep-alive
    connection. uvicorn closes it at once. A proxy that reuses it in that instant (its request on the wire or
    unread in the socket buffer, the close not yet seen) gets a reset: a 502 for a POST behind nginx, which cannot
    know whether the request was processed (Kludex/uvicorn#3124; the compose drill's rolling replacement hit it
    under load).
    Here an idle connection stays open for `KEEP_ALIVE_DRAIN_S`; a request that arrives on it meanwhile is
    answered with `Connection: close`; then it closes. By then a proxy that kept sending here has had each of its
    connections closed after a response, and its new ones refused (the listener is closed), so it has stopped
    choosing this process (nginx: for `fail_timeout`) before the last idle ones close."""

    draining = False

    def shutdown(self) -> None:
        self.draining = True
        if not self.refused and (self.cycle is None or self.cycle.response_complete):
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(KEEP_ALIVE_DRAIN_S, self.timeout_keep_alive_handler)
        else:
            super().shutdown()  # a request in flight: keep-alive off; a refused connection: nothing to do

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False


class GracefulServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        settings: Settings,
        startup_lines: Sequence[str] = (),
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = settings.shutdown_grace_ms / 1000
        self.force_s = settings.shutdown_force_ms / 1000
        self.startup_lines = tuple(startup_lines)
        self.drained = True
        self.signalled_at: float | None = None
        self.first_signal: tuple[int, int | None] | None = None  # (signal, sender pid)
        self._signal_lock = threading.RLock()  # RLock: a signal handler may interrupt its own thread
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        if self.signalled_at is not None:  # a signal during start-up: the drain begins as soon as it can
            self.loop.call_soon(self._begin)
        await super().startup(sockets)  # binds the socket, or logs why not and exits 3
        if self.started:
            for line in self.startup_lines:
                log.info(line)

    # --- signals ------------------------------------------------------------------------------------------------

    def watch_signals(self) -> None:
        """Block SIGTERM/SIGINT in this thread (and so in every thread started from now on) and take them on one
        thread. Call before anything starts a thread."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        threading.Thread(target=self._take_signals, name="signals", daemon=True).start()

    def _take_signals(self) -> None:
        while True:
            info = signal.sigwaitinfo(HANDLED_SIGNALS)
            self.on_signal(info.si_signo, info.si_pid)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's handler, reached only when a signal is not blocked (serve() not called, or a thread that was
        # running before watch_signals). Deliberately not uvicorn's behaviour: no second-signal force quit, and
        # no re-raise of the signal after serve().
        self.on_signal(sig, None)

    def on_signal(self, sig: int, sender: int | None) -> None:
        name = signal.Signals(sig).name
        with self._signal_lock:
            first = self.first_signal is None
            if first:
                self.first_signal = (sig, sender)
                self.signalled_at = time.monotonic()
        if not first:
            self._ignored(sig, sender)
            return
        log.info("shutdown started", extra={"signal": name, "senderPid": sender})
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._begin)
        else:
            self.lifecycle.shutting_down = True
        self.should_exit = True
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

    def _ignored(self, sig: int, sender: int | None) -> None:
        assert self.first_signal is not None
        name = signal.Signals(sig).name
        first_sig, first_sender = self.first_signal
        parent = os.getppid()
        if sig == first_sig and parent != 1 and parent in (sender, first_sender):
            # `uv run` (make run) forwards the signals it receives to its child: the terminal's Ctrl+C or a
            # `kill` of the process group reaches the service twice, once directly and once from its parent.
            log.info(
                f"duplicate {name} ignored: the parent process forwards the signal it received",
                extra={"signal": name, "senderPid": sender, "parentPid": parent, "parent": process_name(parent)},
            )
            return
        log.info("signal ignored, shutdown already in progress", extra={"signal": name, "senderPid": sender})

    def _begin(self) -> None:
        self.lifecycle.begin_shutdown()
        assert self.loop is not None
        self.loop.call_later(self.grace_s, self._grace_elapsed)

    def _grace_elapsed(self) -> None:
        busy = len(self.server_state.tasks)
        if busy:
            log.warning("grace period elapsed with requests in flight", extra={"inFlight": busy})
            for connection in list(self.server_state.connections):
                connection.shutdown()

    def _watchdog(self) -> None:
        time.sleep(self.force_s + WATCHDOG_MARGIN_S)
        log.error("forced exit: shutdown did not complete")
        logging.shutdown()
        os._exit(1)

    async def _wait_tasks_to_complete(self) -> None:
        self.drained = False
        await super()._wait_tasks_to_complete()
        self.drained = True

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        # uvicorn counts its graceful timeout from here; the force limit counts from the signal.
        if self.signalled_at is not None:
            remaining = self.force_s - (time.monotonic() - self.signalled_at)
            self.config.timeout_graceful_shutdown = max(0.0, remaining)  # type: ignore[assignment]
        if self.loop is not None:
            self.loop.call_later(min(WS_CLOSE_WAIT_S, self.grace_s), self._abort_unclosed_websockets)
        await super().shutdown(sockets)

    def _abort_unclosed_websockets(self) -> None:
        stuck = [c for c in list(self.server_state.connections) if isinstance(c, WebSocketsSansIOProtocol)]
        for connection in stuck:
            connection.transport.abort()
        if stuck:
            log.warning("websockets aborted: peers not reading their close frame", extra={"sockets": len(stuck)})


def process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
    except OSError:
        return None


WebSocketSupport = bool | type  # off, uvicorn's websockets-sansio, or a protocol class of the service's own


def connection_limit(settings: Settings, ws: WebSocketSupport) -> int:
    """MAX_CONNECTIONS, or the service's default; never more than the open-file limit leaves room for."""
    wanted = settings.max_connections or (WS_MAX_CONNECTIONS if ws else HTTP_MAX_CONNECTIONS)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and wanted > soft - FD_RESERVE:
        lowered = max(1, soft - FD_RESERVE)
        log.warning(
            "MAX_CONNECTIONS lowered to fit the open-file limit",
            extra={"maxConnections": wanted, "openFileLimit": soft, "effective": lowered},
        )
        return lowered
    return wanted


def uvicorn_config(app: Starlette, settings: Settings, ws: WebSocketSupport) -> ServiceConfig:
    # A class is uvicorn's `ws` protocol class: the ws-gateway's own transport (ccsm_gateway.transport), which
    # takes the same settings below (frame cap, no deflate, ping interval and time-out) from this config, and
    # whose sockets count among the connections MAX_CONNECTIONS bounds.
    guard = ConnectionGuard(
        ErrorResponses(settings),
        head_limit=settings.header_limit_bytes,
        head_timeout_s=settings.header_timeout_ms / 1000,
        max_connections=connection_limit(settings, ws),
    )
    return ServiceConfig(
        app,
        guard=guard,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=DrainingHttpProtocol,
        # HttpProtocol adjusts uvicorn's own WebSocket protocol (protocols.websocket_protocol); a class is used as is
        ws=ws if isinstance(ws, type) else ("websockets-sansio" if ws else "none"),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # the edge middleware reads X-Forwarded-For from TRUSTED_PROXIES only
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=int(settings.shutdown_force_ms / 1000),
        ws_max_size=WS_MAX_FRAME,
        ws_per_message_deflate=False,
        ws_ping_interval=WS_PING_INTERVAL_S,
        ws_ping_timeout=WS_PING_INTERVAL_S,
    )


def serve(app: Starlette, settings: Settings, ws: WebSocketSupport = False) -> int:
    """Serve until a signal; returns the process exit code (0 clean drain, 1 forced, 3 start-up failure)."""
    lifecycle: Lifecycle = app.state.lifecycle
    config = uvicorn_config(app, settings, ws)
    server = GracefulServer(config, lifecycle, settings, getattr(app.state, "startup_lines", ()))
    server.watch_signals()
    try:
        server.run()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        config.guard.close()
    if not server.started:
        return 3
    if server.signalled_at is not None:
        took = round((time.monotonic() - server.signalled_at) * 1000)
        if not server.drained:
            log.error("shutdown forced", extra={"tookMs": took})
            return 1
        log.info("shutdown complete", extra={"tookMs": took})
    return 0


def exit_with(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.exit(code)


def run_service(name: str, create_app: Any, ws: WebSocketSupport = False) -> None:
    """The `python -m <service>` entry point: settings (one clear line and exit 2 when invalid), logs, serve."""
    from ccsm_core.logs import configure_logging
    from ccsm_core.settings import ConfigError, load_settings

    try:
        settings = load_settings(name)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(name, settings.log_level)
    exit_with(serve(create_app(settings), settings, ws=ws))
