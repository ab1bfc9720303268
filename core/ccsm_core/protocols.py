"""uvicorn's HTTP and WebSocket protocols, with the limits a service reachable without the edge needs.

Inside the VPC each task can be reached directly, so the process itself bounds what a connection may cost
(issue 12 items 6, 11, 12):

- **Head size.** The request line and headers together are at most `HEADER_LIMIT_BYTES` (a chunked body's
  trailers too): past it 431 and the connection closes. httptools keeps an unfinished header in memory (and
  grows it by concatenation), so the bytes of an unfinished head are counted as they arrive, read by read;
  a head that arrives whole in one read is measured when it completes.
- **Head time.** A connection's first request head must be complete `HEADER_TIMEOUT_MS` after it was accepted,
  and a later request's head that long after its first byte (slowloris, or a partial head and then silence):
  past it 408 and the connection closes. Idle keep-alive time between requests is uvicorn's keep-alive timeout.
- **Connections.** At most `MAX_CONNECTIONS` per process, HTTP and WebSocket together (`ConnectionGuard`): a
  connection accepted beyond it is answered 503 at once, without reading its request, and closed.
- **Duplicate `Host`** is a 400 (RFC 9112 §3.2).
- **Errors** answered here are the error table's JSON with the app's security headers (`edge.ErrorResponses`),
  never uvicorn's or websockets' `text/plain`; each is followed by a lingering close (RFC 9112 §9.6), so the
  client reads the answer instead of a reset.
- **Logs.** uvicorn's per-connection lines are debug, with any query string redacted (a token in
  `/ws/desktop?token=...` never reaches a log); websockets' own per-connection lines are dropped. Refusals are
  counted and logged as one summary line per `SUMMARY_S` (a flood of bad connections cannot flood the log).
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
from collections import Counter
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.http11 import Response

from ccsm_core.edge import ErrorResponses
from ccsm_core.errors import MESSAGES
from ccsm_core.logs import WEBSOCKETS_LOG, redact_query

log = logging.getLogger("ccsm.protocols")

# After an error answer: how long, and how many bytes, the rest of the client's request is read and dropped
# before the socket closes (nginx's lingering close reads for up to 5 s between reads; a short bound suffices
# for the answer to be read). Past LINGER_MAX lingering sockets, a socket closes at once.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024
LINGER_MAX = 256
SUMMARY_S = 10.0
TIMER_RESOLUTION_S = 0.001
RETRY_AFTER = ((b"retry-after", b"1"),)


class ConnectionLog:
    """uvicorn's logger as a connection uses it: the per-connection lines (`info`, `warning`: a socket accepted
    or refused, an invalid request, an unsupported upgrade) become debug lines, and a query string in their
    arguments is redacted; errors (an app's exception) pass through."""

    # uvicorn formats its TRACE lines only when `logger.level <= TRACE`: never.
    level = logging.INFO

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(msg, *_redacted(args), **kwargs)

    warning = info

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR:
            self._logger.log(level, msg, *_redacted(args), **kwargs)
        else:
            self.info(msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.error(msg, *_redacted(args), **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.exception(msg, *_redacted(args), **kwargs)


def _redacted(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(redact_query(a) if isinstance(a, str) else a for a in args)


class ConnectionGuard:
    """What every connection of one server shares: the cap, the heads being waited for (oldest first), the
    lingering sockets and the refusal counts."""

    def __init__(self, errors: ErrorResponses, head_limit: int, head_timeout_s: float, max_connections: int) -> None:
        self.errors = errors
        self.head_limit = head_limit
        self.head_timeout_s = head_timeout_s
        self.max_connections = max_connections
        # protocol -> when its head started (loop time); insertion order is start order, so expired heads are
        # always at the front and one timer, set for the oldest, serves them all.
        self.pending: dict[HttpProtocol, float] = {}
        self.lingering = 0
        self.refusals: Counter[str] = Counter()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._summary_timer: asyncio.TimerHandle | None = None

    def head_started(self, protocol: HttpProtocol, loop: asyncio.AbstractEventLoop) -> None:
        if protocol in self.pending:
            return
        now = loop.time()
        self.pending[protocol] = now
        if self._sweep_timer is None:
            self._sweep_timer = loop.call_at(now + self.head_timeout_s, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep_timer = None
        # uvloop's timers have millisecond resolution: one may fire a fraction of a millisecond early.
        deadline = loop.time() - self.head_timeout_s + TIMER_RESOLUTION_S
        expired = []
        for protocol, started in self.pending.items():
            if started > deadline:
                break
            expired.append(protocol)
        for protocol in expired:
            protocol.head_timed_out()
        if self.pending:
            oldest = next(iter(self.pending.values()))
            self._sweep_timer = loop.call_at(oldest + self.head_timeout_s, self._sweep, loop)

    def refused(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        self.refusals[reason] += 1
        if self._summary_timer is None:
            self._summary_timer = loop.call_later(SUMMARY_S, self._summarise)

    def _summarise(self) -> None:
        self._summary_timer = None
        counts, self.refusals = dict(self.refusals), Counter()
        level = logging.WARNING if counts.get("overCapacity") else logging.INFO
        log.log(level, "connections refused", extra={"refused": counts, "periodS": SUMMARY_S})

    def close(self) -> None:
        for timer in (self._sweep_timer, self._summary_timer):
            if timer is not None:
                timer.cancel()
        if self.refusals:
            self._summarise()


class ServiceConfig(Config):
    """uvicorn's Config carrying the guard its protocols share."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard


def guard_of(config: Config) -> ConnectionGuard:
    assert isinstance(config, ServiceConfig), "these protocols need a ServiceConfig"
    return config.guard


class Lingering(asyncio.Protocol):
    """A socket after its error answer: write side shut, input read and dropped for a bounded time and amount,
    so the client reads the answer rather than a reset (RFC 9112 §9.6, "Tear-down")."""

    def __init__(self, guard: ConnectionGuard, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.guard = guard
        self.transport = transport
        self.dropped = 0
        guard.lingering += 1
        self.timer = loop.call_later(LINGER_S, transport.close)

    @classmethod
    def answer(
        cls, guard: ConnectionGuard, transport: asyncio.Transport, response: bytes, loop: asyncio.AbstractEventLoop
    ) -> None:
        if transport.is_closing():
            return
        transport.write(response)
        if guard.lingering >= LINGER_MAX or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.set_protocol(cls(guard, transport, loop))
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.dropped += len(data)
        if self.dropped > LINGER_BYTES:
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.guard.lingering -= 1


class _Refused(Exception):
    """Raised from a parser callback to stop httptools once the request has been answered."""


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head limits, the connection cap and JSON errors."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard_of(config)
        self.logger = ConnectionLog(self.logger)  # type: ignore[assignment]
        # Our access line (ccsm_core.edge) replaces uvicorn's, which would format one line per request for nothing.
        self.access_log = False
        if self.ws_protocol_class is WebSocketsSansIOProtocol:
            self.ws_protocol_class = websocket_protocol  # type: ignore[assignment]  # uvicorn only calls it
        self.refused = False  # the socket was handed to a lingering close: this protocol is done
        self.stopped = False  # nothing more is parsed on this connection
        self.head_pending = False  # between a head's start (or the connection's) and its end
        self.head_bytes = 0  # bytes of reads that ended with this head still incomplete
        self.counting = False  # the current read belongs to the pending head from its first byte
        self.read_size = 0
        self.chunk_open = False  # between a chunk's size line and its end (for the last chunk: the trailers)
        self.chunk_body = False
        self.trailer_bytes = 0

    # --- the connection ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        if len(self.connections) >= guard.max_connections:
            # Beyond the cap: answered at once, never parsed, never counted among the connections.
            self.refused = self.stopped = True
            guard.refused("overCapacity", self.loop)
            response = guard.errors.http(503, None, self.server_state.default_headers, RETRY_AFTER)
            Lingering.answer(guard, transport, response, self.loop)
            return
        super().connection_made(transport)
        self.head_pending = True
        guard.head_started(self, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self.guard.pending.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        self._unset_keepalive_if_required()
        self.counting = self.head_pending
        self.read_size = len(data)
        in_chunk = self.chunk_open
        self.chunk_body = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError:
            self._parser_error()
            return
        limit = self.guard.head_limit
        if self.counting and self.head_pending:
            self.head_bytes += len(data)
            if self.head_bytes > limit:
                self.refuse(431, "headerTooLarge")
        elif in_chunk and self.chunk_open and not self.chunk_body:
            self.trailer_bytes += len(data)
            if self.trailer_bytes > limit:
                self.refuse(431, "headerTooLarge")

    def _upgrade(self) -> None:
        if self.stopped:  # refused while its head completed
            return
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            self._unsupported_upgrade_warning()

    def _parser_error(self) -> None:
        if not self.stopped:  # else a callback refused the request and stopped the parser on purpose
            self.refuse(400, "invalidRequest", "Invalid HTTP request")

    def _unsupported_upgrade_warning(self) -> None:
        self.logger.info("Unsupported upgrade request.")

    def shutdown(self) -> None:
        if not self.refused:
            super().shutdown()

    # --- parser callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.cycle is not None:
            self.counting = False  # this read also holds the end of the previous request
        self.head_pending = True
        self.head_bytes = 0
        self.guard.head_started(self, self.loop)

    def on_headers_complete(self) -> None:
        self.head_pending = False
        self.guard.pending.pop(self, None)
        # The whole head came in the reads counted so far and the current one: only a large read needs measuring.
        if self.head_bytes + self.read_size > self.guard.head_limit and self._head_size() > self.guard.head_limit:
            self.refuse(431, "headerTooLarge")
            raise _Refused
        hosts = 0
        for name, _ in self.headers:
            if name == b"host":
                hosts += 1
        if hosts > 1:
            self.refuse(400, "duplicateHost", "Duplicate Host header")
            raise _Refused
        super().on_headers_complete()

    def _head_size(self) -> int:
        # request line: METHOD SP target SP HTTP/1.1 CRLF; each field: name ": " value CRLF; the final CRLF
        size = len(self.parser.get_method()) + len(self.url) + 12 + 2
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    def on_chunk_header(self) -> None:
        self.chunk_open = True
        self.trailer_bytes = 0

    def on_chunk_complete(self) -> None:
        self.chunk_open = False

    def on_body(self, body: bytes) -> None:
        self.chunk_body = True
        super().on_body(body)

    # --- refusals -----------------------------------------------------------------------------------------------

    def head_timed_out(self) -> None:
        self.refuse(408, "headerTimeout")

    def refuse(self, status: int, reason: str, message: str | None = None) -> None:
        """Answer `status` with the error table's JSON and close (lingering), or, when a response is already
        under way on this connection (a pipelined request), stop reading and close once it is sent."""
        guard = self.guard
        self.stopped = True
        self.head_pending = False
        guard.pending.pop(self, None)
        guard.refused(reason, self.loop)
        self.logger.info("refused: %s (%d) from %s", reason, status, _peer(self.client))
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.refused = True
        # What connection_lost would do; the socket now belongs to the lingering close.
        self.connections.discard(self)
        self._unset_keepalive_if_required()
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        response = guard.errors.http(status, message, self.server_state.default_headers)
        Lingering.answer(guard, self.transport, response, self.loop)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def json_reject(errors: ErrorResponses, status: http.HTTPStatus | int, text: str) -> Response:
    """websockets' `ServerProtocol.reject`, answering with the error table's JSON: every refused handshake goes
    through it (a bad handshake, a line too long, uvicorn's 403 and 500)."""
    status = http.HTTPStatus(status)
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    # websockets explains a bad handshake (useful to a client); a server failure says only what the table says
    message = first_line if first_line and status < 500 else MESSAGES.get(status.value, status.phrase)
    body = errors.body(status.value, message)
    headers = Headers([(k.decode(), v.decode()) for k, v in errors.headers(body)])
    return Response(status.value, status.phrase, headers, body)


def websocket_protocol(
    config: Config,
    server_state: ServerState,
    app_state: dict[str, Any],
    _loop: asyncio.AbstractEventLoop | None = None,
) -> WebSocketsSansIOProtocol:
    """uvicorn's websockets-sansio protocol (what `HttpProtocol` upgrades a connection to), made quiet and
    refusing with JSON: its per-connection lines are debug and redacted, websockets' own are dropped (never a
    header dump), a refused handshake is the error table's JSON. Adjusted, not subclassed: the gateway's
    broadcast shortcut (`ccsm_gateway.hub.direct_protocol`) writes frames only to uvicorn's own class, whose
    internals it knows."""
    protocol = WebSocketsSansIOProtocol(config, server_state, app_state, _loop)
    protocol.logger = ConnectionLog(protocol.logger)  # type: ignore[assignment]
    conn = protocol.conn
    conn.logger = logging.LoggerAdapter(logging.getLogger(WEBSOCKETS_LOG), {"websocket": conn})
    conn.debug = False
    conn.reject = functools.partial(json_reject, guard_of(config).errors)  # type: ignore[method-assign]
    return protocol
