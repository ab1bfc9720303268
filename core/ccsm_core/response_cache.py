"""One response cache for every authorised GET (issue 15), and the data version that keys it.

**Data version.** The version of the data is `(shared, local)`: `local` is bumped synchronously by the database's
commit hook in this process; `shared` is a Redis counter (`<prefix>bootstrap:version`) that `CommitBarrier` INCRs
after a request that committed and *before* its response starts, so once a client has seen a write's response
every api process reads the new version. A cached read first reads the counter, then the cache. Both commands
are `Coalesced`: one GET serves the reads that arrived before it was sent, one INCR the commits made before it
was sent. An entry is served only at the version it was
built at and while it is younger than `MAX_AGE_S` (a safety net for writers outside this service, such as the old
backend during the cut-over); if Redis cannot be read the request is served uncached rather than risk stale data.

**Key.** `(path, query string, caller)`: the version is checked against the entry. What the caller may see is
taken from the route's declaration (`service.route(..., cache=...)`), never guessed from the request:
- `PER_USER` (the default of every GET route): the whole `Principal` the guard answers with, so the user's id,
  current role and everything else the guard puts in it (the token's `scope`: desktop-only tokens) are in the key;
- `PER_ROLE`, for a handler whose answer is the same for every caller it admits: the principal without its
  identity (`id`, `login`); every other field, the role and the scope included, stays in the key;
- `UNCACHED`: not served from here (public routes, the bootstrap that has a cache of its own).
The guard authenticates the request before the lookup (401, a deactivated or revoked user) and the handler runs
its own role check on a miss; only 200 answers are stored, so a 403 for one key never serves another one.

**Single flight.** Concurrent misses for one key and version share one handler call, run in a task of its own (a
client that goes away cancels only its own wait). **ETag** (the body's hash, equal data giving equal tags in every
process): `If-None-Match` with it is answered 304 without a body. **Memory**: least recently used entries go first
past `RESPONSE_CACHE_MAX_BYTES`; an answer larger than an eighth of it is not stored. `RESPONSE_CACHE=false` turns
the cache (and the bootstrap's) off: every request reads the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from contextvars import ContextVar
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ccsm_core.guard import Guard, Principal
from ccsm_core.keyspace import Keyspace

log = logging.getLogger("ccsm.response_cache")

MAX_AGE_S = 30.0
REDIS_TIMEOUT_S = 0.5
ENTRY_OVERHEAD_BYTES = 256  # the key, the headers and the bookkeeping of one entry, roughly

Version = tuple[int, int]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Request], Awaitable[Response]]


class Caller(enum.Enum):
    """What of the caller a GET route's answer depends on (its declaration, `service.route(..., cache=)`)."""

    PER_USER = "per-user"
    PER_ROLE = "per-role"
    UNCACHED = "uncached"


PER_USER, PER_ROLE, UNCACHED = Caller.PER_USER, Caller.PER_ROLE, Caller.UNCACHED
_SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(Principal) if f.name not in ("id", "login"))


def caller_key(principal: Principal | None, caller: Caller) -> Hashable:
    """What the caller may see, as the route declares it (see the module's docstring)."""
    if principal is None or caller is PER_USER:
        return principal
    return tuple(getattr(principal, name) for name in _SHARED_FIELDS)


# --- the data version ---------------------------------------------------------------------------------------------


class Coalesced:
    """`call()` with at most one in flight, never answering a caller from a call that was sent before it arrived:
    callers that arrive while one is in flight share the next one, which starts when it returns. For the
    version's GET this means a read never predates a write the caller has already seen; for its INCR, that the
    bump follows every commit it stands for. A storm of N callers costs about two round trips and a handful of
    Redis commands instead of N."""

    def __init__(self, call: Callable[[], Awaitable[int]]) -> None:
        self.call = call
        self._current: asyncio.Future[int] | None = None
        self._next: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0

    async def __call__(self) -> int:
        loop = asyncio.get_running_loop()
        if self._current is None:
            self._current = loop.create_future()
            self._start(self._current)
            return await asyncio.shield(self._current)
        if self._next is None:
            self._next = loop.create_future()
        return await asyncio.shield(self._next)

    def _start(self, future: asyncio.Future[int]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, future: asyncio.Future[int]) -> None:
        self.calls += 1
        try:
            future.set_result(await self.call())  # the call bounds itself (`keyspace.Lane`)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody may be waiting any more
        finally:
            self._current = None
            if self._next is not None:
                self._current, self._next = self._next, None
                self._start(self._current)


class _CommitMark:
    __slots__ = ("committed",)

    def __init__(self) -> None:
        self.committed = False


_request_mark: ContextVar[_CommitMark | None] = ContextVar("ccsm_commit_mark", default=None)


class DataVersion:
    def __init__(self, keyspace: Keyspace) -> None:
        self.keyspace = keyspace
        self.key = keyspace.key("bootstrap", "version")
        # Each of the two has at most one command in flight, so each has a connection of its own.
        self._get_lane = keyspace.lane(REDIS_TIMEOUT_S)
        self._incr_lane = keyspace.lane(REDIS_TIMEOUT_S)
        self.reader = Coalesced(self._get)
        self.bumper = Coalesced(self._incr)  # concurrent commits share one INCR sent after all of them
        self.local = 0
        self._background: set[asyncio.Task[None]] = set()
        self._warned_at = -1e9

    def on_commit(self, reason: str) -> None:
        """The commit hook: the local version moves at once; the shared one before the response (CommitBarrier),
        or right away in the background for a commit outside a request."""
        self.local += 1
        mark = _request_mark.get()
        if mark is not None:
            mark.committed = True
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to publish to
            task = asyncio.get_running_loop().create_task(self.publish())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _get(self) -> int:
        return int(await self._get_lane.command("GET", self.key) or 0)

    async def _incr(self) -> int:
        return int(await self._incr_lane.command("INCR", self.key))

    async def publish(self) -> None:
        try:
            await self.bumper()
        except Exception as exc:
            # The write stands and this process's local version has moved; other processes catch up at MAX_AGE_S.
            log.warning("data version bump failed", extra={"error": type(exc).__name__})

    async def current(self) -> Version | None:
        """The version now, or None when the shared part cannot be read (serve uncached)."""
        local = self.local
        try:
            shared = await self.reader()
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at > 10:
                self._warned_at = now
                log.warning("data version unreadable; serving uncached", extra={"error": type(exc).__name__})
            return None
        return (shared, local)


class CommitBarrier:
    """Pure ASGI: when a request committed a write, the shared data version is bumped before its response starts
    (so a client that has seen the response never gets an older answer from any api process)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):  # reads never commit
            await self.app(scope, receive, send)
            return
        mark = _CommitMark()
        token = _request_mark.set(mark)
        state = scope.get("state") or {}
        version: DataVersion | None = state.get("data_version")

        async def send_after_bump(message: Message) -> None:
            if message["type"] == "http.response.start" and mark.committed and version is not None:
                mark.committed = False
                await version.publish()
            await send(message)

        try:
            await self.app(scope, receive, send_after_bump)
        finally:
            _request_mark.reset(token)
            if mark.committed and version is not None:  # committed, then failed before any response started
                await version.publish()


# --- the cache ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Entry:
    version: Version
    built_at: float
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes
    size: int


class _Answer:
    """A stored answer as an ASGI response: the prepared headers and body, or 304 for a matching ETag."""

    __slots__ = ("entry", "not_modified")

    def __init__(self, entry: Entry, not_modified: bool) -> None:
        self.entry = entry
        self.not_modified = not_modified

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.not_modified:
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", self.entry.etag)]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.entry.headers})
        await send({"type": "http.response.body", "body": self.entry.body})


def _if_none_match(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return bytes(value)
    return None


def etag_matches(header: str | bytes | None, etag: str | bytes) -> bool:
    """RFC 9110 §13.1.2: weak comparison, a list of tags or `*`."""
    if not header:
        return False
    tag = etag.encode("latin-1") if isinstance(etag, str) else etag
    text = header.encode("latin-1") if isinstance(header, str) else header
    for candidate in text.split(b","):
        value = candidate.strip()
        if value == b"*" or value.removeprefix(b"W/") == tag:
            return True
    return False


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class ResponseCache:
    def __init__(
        self,
        version: DataVersion,
        enabled: bool = True,
        max_bytes: int = 32 * 1024 * 1024,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.version = version
        self.enabled = enabled
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 8
        self.max_age_s = max_age_s
        self.bytes = 0
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._flights: dict[tuple[Hashable, Version], asyncio.Task[Entry | Response]] = {}
        self._seen: Version | None = None
        self.fills = 0  # handler calls made on a miss (tests read it)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    async def respond(self, request: Request, handler: Handler, caller: Caller) -> Any:
        guard: Guard = request.state.guard
        principal = await guard.authenticate(request)
        version = await self.version.current()
        if version is None:
            return await handler(request)
        if version != self._seen:
            # Nothing stored at another version can be served again (and a counter that went back, Redis having
            # lost it, must not meet old entries).
            self.clear()
            self._seen = version
        scope = request.scope
        key = (scope["path"], scope["query_string"], caller_key(principal, caller))
        entry = self._entries.get(key)
        if entry is not None and entry.version == version and time.monotonic() - entry.built_at < self.max_age_s:
            self._entries.move_to_end(key)
        else:
            flight_key = (key, version)
            flight = self._flights.get(flight_key)
            if flight is None:
                flight = asyncio.get_running_loop().create_task(self._fill(key, version, handler, request))
                self._flights[flight_key] = flight
                flight.add_done_callback(functools.partial(self._landed, flight_key))
            outcome = await asyncio.shield(flight)
            if not isinstance(outcome, Entry):
                return outcome  # not storable (not a 200): the handler's own answer
            entry = outcome
        return _Answer(entry, etag_matches(_if_none_match(scope), entry.etag))

    async def _fill(self, key: Hashable, version: Version, handler: Handler, request: Request) -> Entry | Response:
        self.fills += 1
        response = await handler(request)
        if (
            response.status_code != 200
            or isinstance(response, StreamingResponse)
            or response.background is not None
            or len(response.body) > self.max_entry_bytes
        ):
            return response
        body = bytes(response.body)
        etag = etag_of(body).encode("ascii")
        headers = [(k, v) for k, v in response.raw_headers if k != b"etag"]
        headers.append((b"etag", etag))
        entry = Entry(version, time.monotonic(), headers, body, etag, len(body) + ENTRY_OVERHEAD_BYTES)
        if self.version.local == version[1] and self._seen == version:  # no commit here while it was read
            self._store(key, entry)
        return entry

    def _store(self, key: Hashable, entry: Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size

    def _landed(self, flight_key: tuple[Hashable, Version], task: asyncio.Task[Entry | Response]) -> None:
        self._flights.pop(flight_key, None)
        if not task.cancelled():
            task.exception()  # retrieved even when every waiter has gone


def cached(handler: Handler, caller: Caller) -> Handler:
    """The endpoint a GET route serves: through the process's response cache (`request.state.responses`) when
    there is one and it is on, else the handler itself."""
    if caller is UNCACHED:
        return handler

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Any:
        cache: ResponseCache | None = request.scope.get("state", {}).get("responses")
        if cache is None or not cache.enabled:
            return await handler(request)
        return await cache.respond(request, handler, caller)

    return endpoint
