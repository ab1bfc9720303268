"""One Redis subscription per process, fanned out to every `/ws/desktop` socket of the process.

The subscription carries two channels: `db-changed` events (forwarded verbatim as text frames to every open
socket, identified or not, contract-core §8.7) and revocations (a user id: that user's sockets close with 4401).

Sockets are `Socket`s: the gateway transport's connections (`ccsm_gateway.transport`, what production serves), or,
behind an ASGI server, an `Outbox` each. Publishing never awaits a client. An `Outbox` hands a frame to the
server's ASGI `send` at once, and in the common case (the transport is writable) that coroutine finishes without
suspending, so it is driven inline with no task at all. Only when the server's transport is paused (the peer is not
reading) does the send continue in a task of its own, and later frames queue behind it in a bounded deque; a socket
whose deque overflows is closed with 1013 (try again later) and dropped from the fan-out, so it cannot slow the
others.

Broadcasts take a shortcut (`Socket.direct_fd`; for an Outbox under uvicorn's own WebSocket, `direct_protocol`):
the wire bytes of a server text frame are the same for every socket (no compression, server frames unmasked), so a
broadcast frame is serialised once and written straight to the file descriptor of each socket whose transport is
writable with nothing buffered, by the loop thread and, when the process may use two cores, a helper thread
(`ccsm_gateway.fanout`); what a write could not finish goes to that socket's transport. Everything else (replies,
closes, paused sockets) goes through the Outbox as above.

When the subscription breaks (Redis restarted, the connection killed) it is re-established with back-off, and
every socket then receives `db-changed` with reason `resync`: it may have missed events in the gap.

Revocations missed in such a gap (or published before this process started) are not lost: after every
(re)subscription the hub reads the revocation log (`ccsm_core.guard.publish_revocation`) in a task of its own
and closes, with 4401, each socket whose token was issued before its user's last revocation. The same record
refuses such a token when it is used to open a new socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from ccsm_core.guard import revocation_retention_s
from ccsm_core.keyspace import Keyspace
from ccsm_core.metrics import Metrics
from ccsm_core.settings import Settings
from ccsm_core.tokens import Claims, issued_before
from ccsm_gateway.fanout import FanOut
from ccsm_gateway.users import UserRecord

# The broadcast shortcut depends on internals of uvicorn 0.54.0 (websockets_sansio_impl.WebSocketsSansIOProtocol:
# `conn`, `transport`, `writable`, `close_sent`, `disconnected`, `handshake_complete`, `initial_response`; its
# `send` writes `b"".join(conn.data_to_send())` after `conn.send_text(text.encode())`) and of websockets 17.4
# (protocol.Protocol: `state`, `side`, `extensions`, `expect_continuation_frame`, `writes`, `debug`; `send_text`
# -> `send_frame` -> `Frame.serialize(mask=side is CLIENT, extensions=extensions)`). Whatever is missing turns it
# off (`direct_protocol` returns None), never the socket.
try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.frames import Frame, Opcode
    from websockets.protocol import Side, State
except ImportError:  # pragma: no cover - a uvicorn or websockets without these modules: every frame via `send`
    DIRECT_WRITES = False
else:
    DIRECT_WRITES = True
    OPEN = State.OPEN

log = logging.getLogger("ccsm.gateway")

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]

QUEUE_LIMIT = 64  # frames waiting behind a blocked send; the publisher emits at most ~7 events/s per api task
RESUBSCRIBE_START_S = 0.1
RESUBSCRIBE_MAX_S = 5.0
POLL_TIMEOUT_S = 1.0
PING_EVERY_S = 10.0  # on the subscription connection; 3 intervals without a reply count as a lost subscription
CATCH_UP_TIMEOUT_S = 2.0  # one read of the revocation log; a connection that stalls is dropped and retried
REVOKED_LIMIT = 100_000  # users remembered as revoked; a log longer than this is read newest first

REFUSALS_REPORT_S = 60.0  # refused upgrades are summed up in one line per minute, never one line each

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


def issued_s(claims: Claims) -> float | None:
    """The earliest instant a token may have been issued (`Claims.issued_ms`), in epoch seconds."""
    issued = claims.issued_ms
    return issued / 1000 if issued is not None else None


def predates_revocation(issued_at: float | None, revoked_at: float | None) -> bool:
    """Whether a socket whose token was issued at `issued_at` (epoch s: `Claims.issued_ms` / 1000; None: the token
    has no `iat`) is older than its user's revocation at `revoked_at` (epoch s; None: never revoked). The API
    guard's rule (`ccsm_core.tokens.issued_before`), on the instants the gateway keeps in seconds."""
    if revoked_at is None:
        return False
    return issued_before(None if issued_at is None else round(issued_at * 1000), round(revoked_at * 1000))


def _decrement(counter: Counter[Any], key: Any) -> None:
    """One less of `key`; a count that reaches 0 leaves the counter (it must not grow with every address seen)."""
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        counter.pop(key, None)


def now_ms() -> int:
    return int(time.time() * 1000)


def frame(**fields: Any) -> str:
    """A server message with `ts` last, key order as the old backend wrote them (contract-core §8.7)."""
    fields["ts"] = now_ms()
    return orjson.dumps(fields).decode()


def resync_frame() -> str:
    return frame(type="db-changed", reason="resync")


def direct_protocol(send: Send) -> Any:
    """The uvicorn protocol object behind `send` when broadcast frames may be written straight to its transport,
    else None (another server, `send` wrapped by a middleware, compression negotiated, internals changed)."""
    if not DIRECT_WRITES:
        return None
    proto = getattr(send, "__self__", None)
    # Exactly uvicorn's bound `send` (not a subclass's, not a wrapper): its checks are the ones `writable` repeats.
    if (
        type(proto) is not WebSocketsSansIOProtocol
        or getattr(send, "__func__", None) is not WebSocketsSansIOProtocol.send
    ):
        return None
    try:
        conn = proto.conn
        if conn.side is not Side.SERVER or conn.extensions or conn.debug:  # masked / deflated / logged frames
            return None
        if not proto.handshake_complete or proto.initial_response is not None or not proto.writable.is_set():
            return None  # only an accepted socket (the Outbox is made after `websocket.accept`)
        writable(proto)  # every attribute it reads exists
        proto.transport.write  # noqa: B018
        if not isinstance(socket_fd(proto), int):
            return None
    except Exception:
        return None
    return proto


def socket_fd(proto: Any) -> int:
    """The file descriptor under the protocol's transport (uvloop's and asyncio's both expose the socket)."""
    fd: int = proto.transport.get_extra_info("socket").fileno()
    return fd


def writable(proto: Any) -> bool:
    """Whether uvicorn's `send` of a text frame would write it at once (what it checks, plus what websockets'
    `send_text` checks), with nothing of the socket's left unwritten: only then may a frame go straight out.
    Runs once per socket per broadcast, so it reads as little as it can: the handshake (`handshake_complete`,
    `initial_response`) is checked once by `direct_protocol`, and an empty transport buffer also means the
    transport is not paused (it pauses above its high-water mark and resumes when it drains)."""
    conn = proto.conn
    transport = proto.transport
    return (
        conn.state is OPEN  # no close sent or received (websockets raises InvalidState otherwise)
        and not conn.writes
        and not conn.expect_continuation_frame
        and not proto.close_sent
        and not proto.disconnected
        and not transport.get_write_buffer_size()  # nothing buffered that a direct write could overtake
        and not transport.is_closing()
    )


def wire_text_frame(text: str) -> bytes | None:
    """The bytes websockets writes for `text` as one unmasked server frame without extensions."""
    if not DIRECT_WRITES:
        return None
    try:
        return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    except Exception:  # pragma: no cover - a websockets whose Frame changed: every frame via `send`
        return None


class Socket(Protocol):
    """What the hub needs of a socket: the ASGI `Outbox` below, or `ccsm_gateway.transport.DesktopConnection`."""

    user_id: int | None
    issued_at: float | None
    closing: bool

    def text(self, text: str) -> bool: ...
    def offer(self, message: Message) -> bool: ...
    def direct_fd(self) -> int: ...
    def finish_write(self, wire: bytes, written: int) -> None: ...
    def close(self, code: int, reason: str = "") -> None: ...


class Outbox:
    """What a socket still has to send; see the module docstring. Never awaited by the publisher."""

    __slots__ = ("_pending", "_task", "closing", "direct", "fd", "hub", "issued_at", "limit", "send", "user_id")

    def __init__(self, send: Send, hub: Hub, limit: int = QUEUE_LIMIT) -> None:
        self.send = send
        self.direct: Any = direct_protocol(send) if hub.direct_writes else None  # see `direct_fd`
        self.fd = socket_fd(self.direct) if self.direct is not None else -1
        self.hub = hub
        self.limit = limit
        self.user_id: int | None = None  # whose socket this is (token sub; with auth off, the identified id)
        self.issued_at: float | None = None  # the token's `iat` (epoch s); None: no token (auth off) or none in it
        self.closing = False
        self._pending: deque[Message] | None = None
        self._task: asyncio.Task[None] | None = None

    def text(self, text: str) -> bool:
        return self._offer({"type": "websocket.send", "text": text})

    def offer(self, message: Message) -> bool:
        """Queue an ASGI send message (shared between sockets by `Hub.broadcast`); False once closing."""
        return self._offer(message)

    def direct_fd(self) -> int:
        """The descriptor a serialised broadcast frame may be written to directly, as uvicorn's `send` would have
        written it: nothing of this socket's is in flight, queued or buffered and the transport is writable.
        -1: use `offer` instead."""
        proto = self.direct
        if proto is None or self._task is not None or self.closing:
            return -1
        try:
            return self.fd if writable(proto) else -1
        except Exception:  # pragma: no cover - uvicorn's or websockets' internals changed under us
            self.direct = None
            return -1

    def finish_write(self, wire: bytes, written: int) -> None:
        """A direct write stopped after `written` bytes (socket buffer full, or an error): the transport writes
        the rest, queueing it or closing on the error as it would for its own write."""
        assert self.direct is not None
        try:
            self.direct.transport.write(memoryview(wire)[written:] if written else wire)
        except Exception:
            self._gone()  # as when uvicorn's `send` raises: the peer is gone

    def close(self, code: int, reason: str = "") -> None:
        """Queue a close frame after what is already queued; nothing is sent after it."""
        if self.closing:
            return
        self._offer({"type": "websocket.close", "code": code, "reason": reason})
        self.closing = True
        self.hub.discard(self)

    def _offer(self, message: Message) -> bool:
        if self.closing:
            return False
        if self._task is not None:
            pending = self._pending
            if pending is None:
                pending = self._pending = deque()
            if len(pending) >= self.limit:
                self._overflow()
                return False
            pending.append(message)
            return True
        self._start(message)
        return True

    def _overflow(self) -> None:
        # Per connection, so debug (anyone can open sockets that never read); the count is in `Hub.slow_closed`.
        log.debug("slow client closed (1013)", extra={"queued": self.limit, "userId": self.user_id})
        self.hub.slow_closed += 1
        if self._pending is not None:
            self._pending.clear()
        self.close(CLOSE_TRY_AGAIN_LATER, "Client too slow")

    def _start(self, message: Message) -> None:
        awaitable = self.send(message)
        if not isinstance(awaitable, Coroutine):  # not uvicorn's or Starlette's: let a task drive it
            self._task = asyncio.get_running_loop().create_task(self._finish(awaitable, None))
            return
        try:
            yielded = awaitable.send(None)
        except StopIteration:
            return  # written without suspending: the usual case
        except Exception:
            self._gone()
            return
        self._task = asyncio.get_running_loop().create_task(self._finish(awaitable, yielded))

    async def _finish(self, awaitable: Awaitable[None], yielded: Any) -> None:
        """Drive a send that suspended (the transport is paused), then everything queued behind it."""
        try:
            if isinstance(awaitable, Coroutine):
                await _resume(awaitable, yielded)
            else:
                await awaitable
            while self._pending:
                await self.send(self._pending.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:
            self._gone()
        finally:
            self._task = None

    def _gone(self) -> None:
        """The peer disconnected under a send: stop sending; the socket's own task tidies up."""
        self.closing = True
        if self._pending is not None:
            self._pending.clear()
        self.hub.discard(self)


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Finish a coroutine that was started by hand and suspended on `yielded`, exactly as a Task would: take over
    the future it yielded (clear its blocking flag, wait for its completion), resume, repeat until it returns.
    Its own exceptions propagate to the caller."""
    loop = asyncio.get_running_loop()
    while True:
        if yielded is None:  # a bare yield: just let the loop run once
            await asyncio.sleep(0)
        else:
            yielded._asyncio_future_blocking = False
            waiter = loop.create_future()
            yielded.add_done_callback(lambda _f, w=waiter: w.done() or w.set_result(None))
            try:
                await waiter
            except asyncio.CancelledError:
                coro.close()  # this task was cancelled (loop shutdown): stop the send where it is
                raise
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


async def stop(task: asyncio.Task[None], attempts: int = 10, wait_s: float = 0.5) -> None:
    """Cancel `task` and wait for it to end, cancelling again if it has not: a library that turns a cancellation
    into a timeout of its own (seen with redis-py 8.1's `PubSub.get_message(timeout=...)` when another task was
    cancelled just before) would otherwise keep the task, and the shutdown waiting on it, alive for ever."""
    for _ in range(attempts):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=wait_s)
    if task.done():
        if not task.cancelled() and task.exception() is not None:
            log.warning("task ended with an error", extra={"error": type(task.exception()).__name__})
    else:
        log.warning("task did not stop", extra={"task": task.get_name()})


class Hub:
    def __init__(
        self,
        settings: Settings,
        keyspace: Keyspace,
        queue_limit: int = QUEUE_LIMIT,
        ping_every_s: float = PING_EVERY_S,
        direct_writes: bool = DIRECT_WRITES,
        fanout_helpers: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.service)
        self.direct_writes = direct_writes  # off: every frame through the ASGI `send`
        self.ping_every_s = ping_every_s
        self.poll_s = min(POLL_TIMEOUT_S, ping_every_s)
        self.keyspace = keyspace
        self.queue_limit = queue_limit
        self.clients: set[Socket] = set()
        self.by_user: dict[int, set[Socket]] = {}
        # Open connections (from the upgrade to the connection's end) per user and per client address: the caps
        # of `admit`. Counted apart from `clients`, which a socket leaves as soon as it starts closing.
        self.max_per_user = settings.ws_max_sockets_per_user
        self.max_per_address = settings.ws_max_sockets_per_address
        self.open_per_user: Counter[int] = Counter()
        self.open_per_address: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # since the last report line
        self._report: asyncio.TimerHandle | None = None
        self.subscribed = asyncio.Event()
        self.subscriptions = 0  # how many times the subscription was (re)established
        self.revocation_retention_s = revocation_retention_s(settings.jwt_expires_seconds)
        self.revoked: dict[int, float] = {}  # user id -> when it was last revoked (epoch s), for the retention
        self.caught_up = asyncio.Event()  # the revocation log was read since the latest (re)subscription
        self.slow_closed = 0
        self.delivered = 0
        self.direct_delivered = 0  # of `delivered`: written straight to the socket (`Outbox.direct_fd`)
        # Named so an operator (or a test) can find this connection: CLIENT LIST TYPE pubsub.
        self.client_name = f"{keyspace.prefix}ws-gateway:{os.getpid()}".replace(" ", "_")
        self.fanout = FanOut(helpers=fanout_helpers)
        self._redis: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._catch_up_task: asyncio.Task[None] | None = None

    # --- sockets ------------------------------------------------------------------------------------------------

    def admit(self, user_id: int | None, address: str) -> str | None:
        """Count a new connection of `user_id` (None: not known yet, auth off) from `address`, or say why it is
        refused ("user" or "address" cap reached: the upgrade is answered 429, which the desktop retries with
        back-off; its own older sockets close within a ping interval when they are dead). Checked and counted in
        one step, so concurrent upgrades cannot overshoot. Every admitted connection is `release`d once."""
        if user_id is not None and self.open_per_user[user_id] >= self.max_per_user:
            reason = "user"
        elif self.open_per_address[address] >= self.max_per_address:
            reason = "address"
        else:
            if user_id is not None:
                self.open_per_user[user_id] += 1
            self.open_per_address[address] += 1
            return None
        self.refused[reason] += 1
        if self._report is None:
            self._report = asyncio.get_running_loop().call_later(REFUSALS_REPORT_S, self._report_refusals)
        return reason

    def release(self, user_id: int | None, address: str) -> None:
        """The connection `admit` counted has ended."""
        if user_id is not None:
            _decrement(self.open_per_user, user_id)
        _decrement(self.open_per_address, address)

    def _report_refusals(self) -> None:
        self._report = None
        if self.refused:
            log.warning(
                "websocket upgrades refused at the socket caps",
                extra={
                    "perUser": self.refused["user"],
                    "perAddress": self.refused["address"],
                    "inS": REFUSALS_REPORT_S,
                    "maxPerUser": self.max_per_user,
                    "maxPerAddress": self.max_per_address,
                },
            )
            self.refused.clear()

    def outbox(self, send: Send) -> Outbox:
        box = Outbox(send, self, self.queue_limit)
        self.clients.add(box)
        return box

    def bind_user(self, box: Socket, user_id: int, issued_at: float | None = None) -> None:
        box.issued_at = issued_at
        if box.user_id == user_id:
            return
        self._unbind(box)
        box.user_id = user_id
        self.by_user.setdefault(user_id, set()).add(box)

    def _unbind(self, box: Socket) -> None:
        if box.user_id is None:
            return
        group = self.by_user.get(box.user_id)
        if group is not None:
            group.discard(box)
            if not group:
                del self.by_user[box.user_id]

    def discard(self, box: Socket) -> None:
        self.clients.discard(box)
        self._unbind(box)

    def broadcast(self, text: str) -> int:
        """Hand `text` to every open socket; returns how many took it. Never awaits."""
        started = time.perf_counter()
        sent = 0
        message = {"type": "websocket.send", "text": text}  # one message for all: servers do not mutate it
        wire = wire_text_frame(text) if self.direct_writes else None
        boxes: list[Socket] = []
        fds: list[int] = []
        for box in list(self.clients):
            fd = box.direct_fd() if wire is not None else -1
            if fd >= 0:
                boxes.append(box)
                fds.append(fd)
            elif box.offer(message):
                sent += 1
        if wire is not None and fds:
            for index, written in self.fanout.write(fds, wire):
                boxes[index].finish_write(wire, written)
        self.direct_delivered += len(fds)
        sent += len(fds)
        self.delivered += sent
        self.metrics.broadcast(time.perf_counter() - started)
        return sent

    def revoke(self, user_id: int) -> int:
        """A revocation just published: every socket of that user closes with 4401."""
        self._remember(user_id, time.time())
        group = list(self.by_user.get(user_id, ()))
        for box in group:
            box.close(CLOSE_UNAUTHORIZED, "Unauthorized")
        if group:
            log.info("sockets closed after revocation", extra={"userId": user_id, "sockets": len(group)})
        return len(group)

    def revoked_since(self, user_id: int, issued_at: float | None) -> bool:
        """Whether a token of `user_id` issued at `issued_at` (epoch s; None: unknown) predates the user's last
        revocation, by the rule the API guard applies (`predates_revocation`)."""
        at = self.revoked.get(user_id)
        if at is None or at < time.time() - self.revocation_retention_s:
            return False
        return predates_revocation(issued_at, at)

    def apply_revocation_log(self, entries: Iterable[Any]) -> int:
        """Revocations read from the log (pairs of member user id, score epoch ms): remember each, and close every
        socket whose token predates its user's revocation. Returns how many sockets were closed."""
        closed = 0
        for entry in entries:
            try:
                member, score = entry
                user_id, at = int(member), float(score) / 1000
            except (TypeError, ValueError):
                log.warning("revocation log entry ignored: not a user id and a time")
                continue
            self._remember(user_id, at)
            for box in list(self.by_user.get(user_id, ())):
                if self.revoked_since(user_id, box.issued_at):
                    box.close(CLOSE_UNAUTHORIZED, "Unauthorized")
                    closed += 1
        if closed:
            log.info("sockets closed after missed revocations", extra={"sockets": closed})
        return closed

    def apply_user_records(self, checked: Iterable[int], records: Mapping[int, UserRecord]) -> int:
        """What the database says now about users that have sockets here (`checked`; a user missing from `records`
        was deleted): an inactive or deleted user's sockets close with 4401, and so does each socket whose token
        predates the user's `tokens_revoked_at` (remembered, so such a token cannot open a new socket either).
        Returns how many sockets were closed."""
        closed = 0
        for user_id in checked:
            record = records.get(user_id)
            if record is not None and record.revoked_at is not None:
                self._remember(user_id, record.revoked_at)
            for box in list(self.by_user.get(user_id, ())):
                if record is None or not record.active or predates_revocation(box.issued_at, record.revoked_at):
                    box.close(CLOSE_UNAUTHORIZED, "Unauthorized")
                    closed += 1
        if closed:
            log.info("sockets closed after the database check of their users", extra={"sockets": closed})
        return closed

    def _remember(self, user_id: int, at: float) -> None:
        if at > self.revoked.get(user_id, 0.0):
            self.revoked[user_id] = at
        if len(self.revoked) > REVOKED_LIMIT:  # only ever reached with a flood of revocations: keep the newest
            horizon = time.time() - self.revocation_retention_s
            newest = sorted(self.revoked.items(), key=lambda item: item[1])[-REVOKED_LIMIT // 2 :]
            self.revoked = {user: when for user, when in newest if when >= horizon}

    # --- the subscription ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            client_name=self.client_name,
        )
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._report is not None:
            self._report.cancel()
            self._report_refusals()
        for task in (self._task, self._catch_up_task):
            if task is not None:
                await stop(task)
        if self._redis is not None:
            try:
                await asyncio.wait_for(self._redis.aclose(), CATCH_UP_TIMEOUT_S)
            except TimeoutError:
                log.warning("redis client did not close in time")
        self.fanout.close()

    async def _run(self) -> None:
        assert self._redis is not None
        backoff = RESUBSCRIBE_START_S
        channels = (self.keyspace.db_changed_channel, self.keyspace.revocations_channel)
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                self.subscriptions += 1
                self.subscribed.set()
                self._start_catch_up()
                if self.subscriptions > 1:
                    sent = self.broadcast(resync_frame())
                    log.info("subscription re-established; clients told to resync", extra={"clients": sent})
                else:
                    log.info("subscribed to db-changed", extra={"channel": channels[0]})
                backoff = RESUBSCRIBE_START_S
                loop = asyncio.get_running_loop()
                heard = next_ping = loop.time()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_s)
                    now = loop.time()
                    if message is not None:
                        heard = now
                        self._dispatch(message)
                    # A Redis that vanished without a reset (host gone, network partition) never ends the read:
                    # ping it, and treat silence well past the ping interval as a lost subscription.
                    if now - heard > 3 * self.ping_every_s:
                        raise ConnectionError("subscription silent")
                    if now >= next_ping:
                        await pubsub.ping()
                        next_ping = now + self.ping_every_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed.is_set():
                    log.warning("subscription lost; resubscribing", extra={"error": type(exc).__name__})
                self.subscribed.clear()
                self.caught_up.clear()
                # Count the gap even when the first attempt failed: clients connected meanwhile get a resync.
                self.subscriptions = max(self.subscriptions, 1)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _start_catch_up(self) -> None:
        if self._catch_up_task is not None:
            self._catch_up_task.cancel()
        self.caught_up.clear()
        self._catch_up_task = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        """Read the revocation log until it answers, without ever holding up the subscription loop (a task of its
        own); what was published after subscribing arrives live. Each attempt uses a connection of its own, made
        for it and closed after it: a pooled one could be a connection that stalled with the subscription."""
        backoff = RESUBSCRIBE_START_S
        while True:
            try:
                entries = await self._read_revocation_log()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("revocation log unreadable; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
        closed = self.apply_revocation_log(entries)
        self.caught_up.set()
        log.info("revocation log read", extra={"revocations": len(entries), "socketsClosed": closed})

    async def _read_revocation_log(self) -> list[Any]:
        client = aioredis.Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=CATCH_UP_TIMEOUT_S,
            socket_timeout=CATCH_UP_TIMEOUT_S,
            single_connection_client=True,
            retry=None,
        )
        try:
            since_ms = int((time.time() - self.revocation_retention_s) * 1000)
            entries: list[Any] = await client.zrevrangebyscore(
                self.keyspace.revocation_log_key, "+inf", since_ms, start=0, num=REVOKED_LIMIT, withscores=True
            )
            return entries
        finally:
            await client.aclose()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message.get("channel")
        data = message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(data, bytes):
            return
        if channel == self.keyspace.db_changed_channel:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                log.warning("db-changed payload is not UTF-8; ignored")
                return
            self.broadcast(text)
        elif channel == self.keyspace.revocations_channel:
            try:
                user_id = int(data)
            except ValueError:
                return
            self.revoke(user_id)
