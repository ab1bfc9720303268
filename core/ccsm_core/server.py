"""Run one app under uvicorn with the shutdown the runbook asks for (§8; contract-core §8.5).

SIGTERM/SIGINT: `/ready` turns 503 at once; the listeners close (no new connections); idle keep-alive
connections close; WebSockets get close code 1012 (uvicorn's shutdown, fix 6) so desktops reconnect to another
task; in-flight requests finish. At `SHUTDOWN_GRACE_MS` a line reports what is still running; at
`SHUTDOWN_FORCE_MS` what remains is cancelled and the process exits 1. A clean drain exits 0. Later signals are
ignored, as in the old backend. A watchdog thread guarantees the exit even if a cancelled task will not die.

The protocols (`ccsm_core.protocols`) bound what one connection may cost.
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


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, settings: Settings) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = settings.shutdown_grace_ms / 1000
        self.force_s = settings.shutdown_force_ms / 1000
        self.drained = True
        self.signalled_at: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Deliberately not uvicorn's: no second-signal force quit and no re-raise of the signal after serve().
        if self.signalled_at is not None:
            log.info("signal ignored, shutdown already in progress", extra={"signal": signal.Signals(sig).name})
            return
        self.signalled_at = time.monotonic()
        log.info("shutdown started", extra={"signal": signal.Signals(sig).name})
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._begin)
        else:
            self.lifecycle.shutting_down = True
        self.should_exit = True
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

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


def connection_limit(settings: Settings, ws: bool) -> int:
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


def uvicorn_config(app: Starlette, settings: Settings, ws: bool) -> ServiceConfig:
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
        http=HttpProtocol,
        ws="websockets-sansio" if ws else "none",  # HttpProtocol adjusts each one (protocols.websocket_protocol)
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


def serve(app: Starlette, settings: Settings, ws: bool = False) -> int:
    """Serve until a signal; returns the process exit code (0 clean drain, 1 forced, 3 start-up failure)."""
    lifecycle: Lifecycle = app.state.lifecycle
    config = uvicorn_config(app, settings, ws)
    server = GracefulServer(config, lifecycle, settings)
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


def run_service(name: str, create_app: Any, ws: bool = False) -> None:
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
