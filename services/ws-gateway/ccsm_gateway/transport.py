"""The gateway's own WebSocket transport: uvicorn's protocol class for `/ws/desktop` (issue 15, issue 12 item 5).

uvicorn still serves everything else on the port (`/health`, `/ready`, its limits, signals and the drain of
ccsm_core.server); when its HTTP parser sees an upgrade it hands the connection to `DesktopConnection`, an
`asyncio.Protocol` that speaks the desktop protocol directly instead of running an ASGI app per socket.

Why: a desktop socket spends its life idle, so what it holds is what counts. Behind uvicorn's ASGI WebSocket
(bench/ws_fanout.py measured 16-19 KiB per idle socket, against ~13 for a bare `websockets` server) each socket
kept a scope dict, a task with its coroutine frames, uvicorn's protocol object, the handshake's parsed request
(pinned by websockets' handshake parser), an outbox, an asyncio queue and event, and two timers. Here a socket is
this object (slots), its transport, and websockets' sans-I/O frame parser (`websockets.protocol.Protocol`, about
1.3 KiB): no task, no coroutine, no timer of its own. The handshake is parsed and answered by websockets'
`ServerProtocol`, which is dropped once the socket is open.

- Protocol pings: one timer for the process (`Heartbeat`): every socket is pinged every `ws_ping_interval` (30 s)
  from its opening, and one that has not answered the previous ping by then is closed (1011), as uvicorn did.
- Token expiry: one heap for the process, looked at by the same one-second tick.
- Writes: replies go to the transport; a socket whose unsent bytes pass `SEND_BUFFER_LIMIT` (the peer is not
  reading) is closed with 1013 and leaves the fan-out. Broadcast frames may be written straight to the socket's
  descriptor by `Hub.broadcast` (`direct_fd`: only while nothing is buffered, so they cannot overtake anything).
- Closing: after our close frame the peer has `CLOSE_TIMEOUT_S` to answer, and on shutdown (1012) `WS_CLOSE_WAIT_S`,
  then the connection is aborted: a peer that stopped reading cannot hold a socket, or the drain, open.
- Other upgrade paths go to uvicorn's own WebSocket protocol and so to the ASGI app (which refuses them: 403).
- uvicorn's `limit_concurrency`, when set, also bounds upgrades (503), which its HTTP protocol does not check.

What the desktop sees is unchanged (contract-core §8.7 and fix 6): 403 for a foreign Origin, 4401 for a bad,
expired or revoked token, 4403 on a foreign identify, 1009 over 64 KiB, 1012 at shutdown, 1013 when too slow,
no compression; the caps answer 429 (`Hub.admit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol

from ccsm_core.edge import HELMET_HEADERS, TrustedProxies
from ccsm_core.protocols import guard_of, json_reject, websocket_protocol
from ccsm_core.server import WS_CLOSE_WAIT_S
from ccsm_core.settings import Settings
from ccsm_core.tokens import LEEWAY_S, TokenError, TokenService, bearer_token
from ccsm_gateway.desktop_socket import ENDPOINT, RETRY_AFTER_S, on_message, refused_by_database
from ccsm_gateway.hub import CLOSE_TRY_AGAIN_LATER, CLOSE_UNAUTHORIZED, Hub, Message, frame, issued_s
from ccsm_gateway.memory import Trimmer
from ccsm_gateway.users import Lookup, UserChecks

log = logging.getLogger("ccsm.gateway")
# websockets logs every frame at debug: with LOG_LEVEL=debug that would be a line per frame per socket.
wire_log = logging.getLogger("ccsm.gateway.wire")
wire_log.setLevel(logging.WARNING)

SEND_BUFFER_LIMIT = 64 * 1024  # unsent bytes beyond the kernel's socket buffer before a socket counts as too slow
CLOSE_TIMEOUT_S = 10.0  # uvicorn's close_timeout: how long the peer has to answer our close frame
PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False, extensions=[])
OPEN = State.OPEN


class Gateway:
    """What every connection of the process shares: the hub, token verification, the user checks, the settings,
    the heartbeat. Made once in the lifespan (`ccsm_gateway.app.hub`) and found in uvicorn's app state."""

    def __init__(
        self,
        hub: Hub,
        tokens: TokenService,
        settings: Settings,
        proxies: TrustedProxies,
        users: UserChecks | None,
    ) -> None:
        self.hub = hub
        self.tokens = tokens
        self.settings = settings
        self.proxies = proxies
        self.users = users
        self.origins = frozenset(settings.cors_origins)
        self.extra_headers = [(k.decode(), v.decode()) for k, v in HELMET_HEADERS] if settings.use_helmet else []
        self.heartbeat: Heartbeat | None = None

    def heartbeat_for(self, interval_s: float | None) -> Heartbeat | None:
        if interval_s is None or interval_s <= 0:
            return None
        if self.heartbeat is None:
            self.heartbeat = Heartbeat(interval_s)
        return self.heartbeat

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()


class Heartbeat:
    """Protocol pings and token expiries for every socket of the process, on one timer that ticks each second.

    Sockets sit in one of `interval_s` one-second slots, the slot of their opening; each tick visits one slot, so
    a socket is pinged every `interval_s` after it opened and a socket is visited in O(1) per tick. Expiries are a
    heap of (instant, sequence, connection); entries of closed connections are skipped and, when they outnumber
    the open ones, dropped."""

    def __init__(self, interval_s: float) -> None:
        self.slots: list[set[DesktopConnection]] = [set() for _ in range(max(1, round(interval_s)))]
        self.position = 0
        self.expiries: list[tuple[float, int, DesktopConnection]] = []
        self.sequence = itertools.count()
        self.open = 0
        self.trimmer = Trimmer()  # memory back to the system after a burst of closes (ccsm_gateway.memory)
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    def add(self, conn: DesktopConnection, expires_at: float | None) -> None:
        slot = (self.position - 1) % len(self.slots)  # visited last: a full interval from now
        self.slots[slot].add(conn)
        conn.slot = slot
        self.open += 1
        if expires_at is not None:
            heapq.heappush(self.expiries, (expires_at, next(self.sequence), conn))
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._next = loop.time() + 1.0
            self._handle = loop.call_at(self._next, self._tick)

    def remove(self, conn: DesktopConnection) -> None:
        if conn.slot >= 0:
            self.slots[conn.slot].discard(conn)
            conn.slot = -1
            self.open -= 1
            self.trimmer.note_closed()
            if len(self.expiries) > 2 * self.open + 64:
                # Closed connections' entries would keep them (and their transports) alive until they expire.
                self.expiries = [e for e in self.expiries if e[2].slot >= 0]
                heapq.heapify(self.expiries)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        slot = self.slots[self.position]
        self.position = (self.position + 1) % len(self.slots)
        for conn in list(slot):
            conn.beat()
        now = time.time()
        expiries = self.expiries
        while expiries and expiries[0][0] <= now:
            _, _, conn = heapq.heappop(expiries)
            if conn.slot >= 0:
                conn.expire()
        self.trimmer.tick()
        self._next = max(self._next + 1.0, loop.time())
        self._handle = loop.call_at(self._next, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class DesktopConnection(asyncio.Protocol):
    """One `/ws/desktop` connection, from the upgrade request uvicorn hands over to the end; see the module."""

    __slots__ = (
        "_close_timer",
        "_parts",
        "_text",
        "address",
        "admitted",
        "alive",
        "app_state",
        "closing",
        "config",
        "fd",
        "gateway",
        "issued_at",
        "proto",
        "server_state",
        "slot",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.gateway: Gateway | None = app_state.get("gateway")
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.proto: Protocol | None = None  # the frame parser, once the socket is open
        self.user_id: int | None = None  # whose socket this is (token sub; with auth off, the identified id)
        self.issued_at: float | None = None  # the token's `iat`
        self.address = ""
        self.admitted = False  # counted by `Hub.admit`: released when the connection ends
        self.closing = False  # our close frame is queued (or the peer is gone): nothing more is sent
        self.alive = True  # a pong arrived since the last ping
        self.fd = -1
        self.slot = -1  # its heartbeat slot while open, else -1
        self._parts: list[bytes] | None = None  # a fragmented message being received
        self._text = False  # ... and whether it is text
        self._close_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)  # type: ignore[arg-type]  # uvicorn calls shutdown() on it

    def data_received(self, data: bytes) -> None:
        if self.proto is not None:
            self._receive(data)
        elif self.fd == -1 and not self.closing:
            self.fd = -2  # the upgrade request is being handled
            self._upgrade(data)

    def eof_received(self) -> bool | None:
        if self.proto is not None:
            self.proto.receive_eof()
            self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server_state.connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        gateway = self.gateway
        if gateway is not None:
            gateway.hub.discard(self)
            if gateway.heartbeat is not None:
                gateway.heartbeat.remove(self)
            if self.admitted:
                self.admitted = False
                gateway.hub.release(self.user_id if gateway.settings.auth_required else None, self.address)
        self.proto = None

    def shutdown(self) -> None:
        """uvicorn's drain (SIGTERM): close with 1012 so the desktop reconnects to another task."""
        if self.proto is not None and not self.closing:
            self.close(1012, "")
        self.closing = True
        loop = asyncio.get_running_loop()
        self.transport.close()  # after what is buffered: the close frame
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = loop.call_later(WS_CLOSE_WAIT_S, self.transport.abort)

    # --- the upgrade ------------------------------------------------------------------------------------------

    def _upgrade(self, raw: bytes) -> None:
        gateway = self.gateway
        handshake = ServerProtocol(max_size=self.config.ws_max_size, logger=wire_log)
        handshake.receive_data(raw)
        events = handshake.events_received()
        request = events[0] if events and isinstance(events[0], Request) else None
        if gateway is None or request is None or request.path.partition("?")[0] != ENDPOINT:
            self._hand_to_asgi(raw)  # not ours (or nothing to parse): uvicorn's own WebSocket and the app
            return
        response = handshake.accept(request)
        if response.status_code != 101:  # not a valid WebSocket request: websockets' 400/426 and its explanation
            text = (response.body or b"").decode("utf-8", "replace")
            self._answer(handshake, json_reject(guard_of(self.config).errors, response.status_code, text))
            return
        origin = request.headers.get("Origin")
        if origin is not None and origin not in gateway.origins:
            log.debug("websocket refused: origin not allowed", extra={"origin": origin[:200]})
            self._refuse(handshake, 403, "Forbidden")
            return
        limit = self.config.limit_concurrency
        if limit is not None and len(self.server_state.connections) > limit:
            self._refuse(handshake, 503, "Service unavailable", retry_after=1)
            return
        if not gateway.settings.auth_required:
            self._admit(handshake, response, request, None, None, None)
            return
        try:
            token = bearer_token(request.headers.get("Authorization"))
            if token is None:
                raise TokenError("missing bearer token")
            claims = gateway.tokens.verify(token)
            issued = issued_s(claims)
            if gateway.hub.revoked_since(claims.sub, issued):
                raise TokenError("issued before its user was revoked")
        except TokenError:
            self._open(handshake, response)
            self.close(CLOSE_UNAUTHORIZED, "Unauthorized")
            return
        expires_at = claims.exp + LEEWAY_S  # the instant `verify` starts refusing it
        if gateway.users is None:
            self._admit(handshake, response, request, claims.sub, issued, expires_at)
            return
        lookup = gateway.users.lookup(claims.sub)
        if lookup.done():
            self._decided(lookup.result(), handshake, response, request, claims.sub, issued, expires_at)
            return
        self.transport.pause_reading()  # nothing to read before the answer: a client sends nothing before 101

        def decided(future: asyncio.Future[Lookup]) -> None:
            if self.closing or self.transport.is_closing():
                return  # the client left meanwhile
            self.transport.resume_reading()
            self._decided(future.result(), handshake, response, request, claims.sub, issued, expires_at)

        lookup.add_done_callback(decided)

    def _decided(
        self,
        record: Lookup,
        handshake: ServerProtocol,
        response: Response,
        request: Request,
        user_id: int,
        issued_at: float | None,
        expires_at: float,
    ) -> None:
        if refused_by_database(record, issued_at):
            self._open(handshake, response)
            self.close(CLOSE_UNAUTHORIZED, "Unauthorized")
            return
        self._admit(handshake, response, request, user_id, issued_at, expires_at)

    def _admit(
        self,
        handshake: ServerProtocol,
        response: Response,
        request: Request,
        user_id: int | None,
        issued_at: float | None,
        expires_at: float | None,
    ) -> None:
        gateway = self.gateway
        assert gateway is not None
        forwarded = ", ".join(request.headers.get_all("X-Forwarded-For"))
        scope = {
            "client": self.transport.get_extra_info("peername"),
            "headers": [(b"x-forwarded-for", forwarded.encode())],
        }
        self.address = gateway.proxies.client_ip(scope)
        over = gateway.hub.admit(user_id, self.address)
        if over is not None:
            self._refuse(handshake, 429, "Too many connections", retry_after=RETRY_AFTER_S)
            return
        self.admitted = True
        self._open(handshake, response)
        hub = gateway.hub
        hub.clients.add(self)
        if user_id is not None:
            hub.bind_user(self, user_id, issued_at)
        heartbeat = gateway.heartbeat_for(self.config.ws_ping_interval)
        if heartbeat is not None:
            heartbeat.add(self, expires_at)
        self.text(frame(type="connected", endpoint=ENDPOINT))

    def _open(self, handshake: ServerProtocol, response: Response) -> None:
        """Send the 101 (with the service's security headers) and switch to the frame parser; the handshake's
        objects are dropped."""
        assert self.gateway is not None
        for name, value in self.gateway.extra_headers:
            response.headers[name] = value
        handshake.send_response(response)
        self.transport.write(b"".join(handshake.data_to_send()))
        self.proto = Protocol(Side.SERVER, state=OPEN, max_size=self.config.ws_max_size, logger=wire_log)
        sock = self.transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def _refuse(self, handshake: ServerProtocol, status: int, error: str, retry_after: int | None = None) -> None:
        """The error table's JSON answer (with the service's headers), as every refusal outside the app is."""
        response = json_reject(guard_of(self.config).errors, status, error)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        self._answer(handshake, response)

    def _answer(self, handshake: ServerProtocol, response: Response) -> None:
        """An HTTP answer instead of the upgrade, then the end of the connection."""
        handshake.send_response(response)
        self.transport.write(b"".join(handshake.data_to_send()))
        self.closing = True
        self.transport.close()

    def _hand_to_asgi(self, raw: bytes) -> None:
        self.server_state.connections.discard(self)
        self.closing = True
        # uvicorn's own protocol, as the service's HttpProtocol would have made it (quiet, JSON refusals).
        other = websocket_protocol(self.config, self.server_state, self.app_state)
        other.connection_made(self.transport)
        self.transport.set_protocol(other)
        other.data_received(raw)

    # --- frames -----------------------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        proto = self.proto
        assert proto is not None
        proto.receive_data(data)
        for event in proto.events_received():
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    self._message(opcode, event.data)
                else:
                    self._parts = [bytes(event.data)]
                    self._text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT:
                if self._parts is not None:
                    self._parts.append(bytes(event.data))
                    if event.fin:
                        parts, self._parts = self._parts, None
                        self._message(Opcode.TEXT if self._text else Opcode.BINARY, b"".join(parts))
            elif opcode is Opcode.PONG:
                self.alive = True
            # PING: websockets queued the pong; CLOSE: it queued the reply (or ended the handshake we started)
        self._flush()

    def _message(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self.gateway is None:
            return
        message: Message
        if opcode is Opcode.TEXT:
            try:
                message = {"text": bytes(data).decode()}
            except UnicodeDecodeError:
                assert self.proto is not None
                self.proto.fail(1007, "invalid UTF-8")  # RFC 6455 §8.1
                self.closing = True
                self.gateway.hub.discard(self)
                return
        else:
            message = {"bytes": bytes(data)}
        gateway = self.gateway
        auth_user = self.user_id if gateway.settings.auth_required else None
        on_message(gateway.hub, self, auth_user, gateway.settings, message)

    def _flush(self) -> None:
        """Write what the frame parser has to send (pongs, close frames); its empty chunk means: end the TCP
        connection (the closing handshake is over, or failed)."""
        proto = self.proto
        if proto is None:
            return
        for chunk in proto.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()
        if proto.state is not OPEN and not self.closing:
            self.closing = True  # the peer closed (or broke the protocol): leave the fan-out
            if self.gateway is not None:
                self.gateway.hub.discard(self)

    # --- what the hub and the desktop protocol call (ccsm_gateway.hub.Socket) ---------------------------------

    def text(self, text: str) -> bool:
        if self.closing:
            return False
        self._write(Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[]))
        return True

    def offer(self, message: Message) -> bool:
        """A broadcast this socket could not take directly (something is buffered): queue it on the transport."""
        text = message.get("text")
        return self.text(text) if isinstance(text, str) else False

    def direct_fd(self) -> int:
        """The descriptor a broadcast frame may be written to directly (nothing buffered, not closing), or -1."""
        if self.closing or self.transport.get_write_buffer_size():
            return -1
        return self.fd

    def finish_write(self, wire: bytes, written: int) -> None:
        """A direct write stopped after `written` bytes: the transport writes the rest (or finds the error)."""
        if self.closing:
            return
        self._write(memoryview(wire)[written:] if written else wire)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is queued, and nothing after it; the peer has CLOSE_TIMEOUT_S to answer."""
        if self.closing:
            return
        self.closing = True
        if self.gateway is not None:
            self.gateway.hub.discard(self)
        proto = self.proto
        if proto is not None:
            with contextlib.suppress(InvalidState):  # the peer's close came first
                proto.send_close(code, reason)
            self._flush()
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.transport.abort)

    def _write(self, data: bytes | memoryview) -> None:
        transport = self.transport
        transport.write(data)
        if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT and not self.closing:
            # Per connection, so debug (anyone can open sockets that never read); the count is in the hub.
            log.debug("slow client closed (1013)", extra={"userId": self.user_id})
            if self.gateway is not None:
                self.gateway.hub.slow_closed += 1
            self.close(CLOSE_TRY_AGAIN_LATER, "Client too slow")

    # --- the heartbeat's calls --------------------------------------------------------------------------------

    def beat(self) -> None:
        """Every ping interval: drop a peer that did not answer the previous ping, else ping it."""
        if self.closing or self.proto is None:
            return
        if not self.alive:
            self.proto.fail(1011, "keepalive ping timeout")  # as uvicorn did
            self._flush()
            self.closing = True
            if self.gateway is not None:
                self.gateway.hub.discard(self)
            self.transport.close()
            self._close_timer = asyncio.get_running_loop().call_later(WS_CLOSE_WAIT_S, self.transport.abort)
            return
        self.alive = False
        self._write(PING_FRAME)

    def expire(self) -> None:
        log.debug("socket closed: token expired", extra={"userId": self.user_id})
        self.close(CLOSE_UNAUTHORIZED, "Token expired")
