"""Revocations the gateway was not subscribed for are not lost: the revocation log (written with every published
revocation) is read after each (re)subscription, and sockets whose token predates their user's revocation close
with 4401; such a token also cannot open a new socket, on this gateway or one started later."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import ConnectionClosed

from ccsm_core.db import connect_sync
from ccsm_core.guard import publish_revocation, revocation_retention_s
from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings
from ccsm_gateway.hub import Hub, Outbox
from tests.gateway.test_subscription import FreezableProxy
from tests.gateway.wsclient import close_code, open_socket, opened, token_for
from tests.harness import ServiceProcess, running


@dataclasses.dataclass
class FakeKeyspace:
    prefix: str = "test:"


class Recorder:
    """An ASGI `send` that completes at once and keeps every message; `until` waits for a condition."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.changed.set()

    def kinds(self) -> list[str]:
        return [
            f"close {m['code']}" if m["type"] == "websocket.close" else m["text"].split('"reason":"')[1].split('"')[0]
            for m in self.messages
        ]

    async def until(self, kind: str, within: float = 15) -> None:
        async with asyncio.timeout(within):
            while kind not in self.kinds():
                self.changed.clear()
                await self.changed.wait()


def socket_of(hub: Hub, user_id: int, issued_at: int | None) -> tuple[Outbox, Recorder]:
    send = Recorder()
    box = hub.outbox(send)
    hub.bind_user(box, user_id, issued_at)
    return box, send


# --- the rules, on a hub without Redis ------------------------------------------------------------------------


def test_a_logged_revocation_closes_only_the_sockets_whose_token_predates_it() -> None:
    async def scenario() -> tuple[int, list[bool]]:
        hub = Hub(Settings(), FakeKeyspace())  # type: ignore[arg-type]
        now = time.time()
        old, _ = socket_of(hub, 7, int(now - 100))
        newer, _ = socket_of(hub, 7, int(now - 10))  # logged in again after the revocation
        other, _ = socket_of(hub, 8, int(now - 100))
        closed = hub.apply_revocation_log([(b"7", (now - 50) * 1000)])
        hub.fanout.close()
        return closed, [old.closing, newer.closing, other.closing]

    closed, closing = asyncio.run(scenario())
    assert closed == 1
    assert closing == [True, False, False]


def test_a_token_issued_before_a_remembered_revocation_or_in_its_second_is_refused_and_a_later_one_is_not() -> None:
    hub = Hub(Settings(), FakeKeyspace())  # type: ignore[arg-type]
    hub.fanout.close()
    revoked_at = time.time() - 30
    hub.apply_revocation_log([("9", revoked_at * 1000)])
    assert hub.revoked_since(9, int(revoked_at) - 1)
    assert hub.revoked_since(9, None)  # a token without `iat` cannot show it is newer
    assert hub.revoked_since(9, int(revoked_at))  # its second began before the revocation (ccsm_core.guard)
    assert not hub.revoked_since(9, int(revoked_at) + 1)
    assert not hub.revoked_since(10, int(revoked_at) - 1)


def test_a_revocation_older_than_a_token_lifetime_is_forgotten() -> None:
    hub = Hub(Settings(jwt_expires_seconds=3600), FakeKeyspace())  # type: ignore[arg-type]
    hub.fanout.close()
    long_ago = time.time() - revocation_retention_s(3600) - 5
    hub.apply_revocation_log([(b"9", long_ago * 1000)])
    assert not hub.revoked_since(9, int(long_ago) - 100)


def test_malformed_log_entries_are_skipped_and_the_rest_applied() -> None:
    hub = Hub(Settings(), FakeKeyspace())  # type: ignore[arg-type]
    hub.fanout.close()
    now_ms = time.time() * 1000
    hub.apply_revocation_log([(b"x", now_ms), ("7",), None, (b"7", "soon"), (b"12", now_ms)])
    assert list(hub.revoked) == [12]


# --- against Redis ---------------------------------------------------------------------------------------------


def test_a_revocation_published_while_the_subscription_was_stalled_closes_that_users_sockets_after_it_returns(
    settings: Settings,
) -> None:
    async def scenario() -> tuple[list[str], list[str], int]:
        url = urlsplit(settings.redis_url)
        proxy = FreezableProxy(url.hostname or "127.0.0.1", url.port or 6379)
        await proxy.start()
        proxied = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        direct = Keyspace(settings)  # the api's connection, not through the stalled proxy
        hub = Hub(proxied, Keyspace(proxied), ping_every_s=0.2)
        issued = int(time.time()) - 60
        _, revoked_send = socket_of(hub, 9101, issued)
        _, bystander_send = socket_of(hub, 9102, issued)
        await hub.start()
        try:
            await asyncio.wait_for(hub.caught_up.wait(), 10)
            proxy.freeze()  # nothing flows on the subscription (nor on the hub's pooled connection)
            await publish_revocation(direct, 9101, revocation_retention_s(settings.jwt_expires_seconds))
            await revoked_send.until("close 4401")
            await asyncio.wait_for(hub.caught_up.wait(), 10)
            return revoked_send.kinds(), bystander_send.kinds(), hub.subscriptions
        finally:
            await hub.close()
            await direct.close()
            await proxy.close()

    revoked, bystander, subscriptions = asyncio.run(scenario())
    assert revoked == ["resync", "close 4401"]
    assert bystander == ["resync"]
    assert subscriptions == 2


@pytest.fixture
def user_9201(settings: Settings) -> Iterator[int]:
    """A user of its own (the gateway checks that a socket's user exists and is active): its revocation, logged in
    Redis for the rest of the run, concerns no other test."""
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute(
            "INSERT INTO users (id, first_name, last_name, email, login, password, authcode, system_role, is_active,"
            " is_ccs) VALUES (9201, 'Rev', 'Oked', 'revoked@ccsm.test', 'revoked9201', 'x', '920192', 2, 1, 1)"
        )
        yield 9201
        cur.execute("DELETE FROM users WHERE id = 9201")
    finally:
        conn.close()


@pytest.mark.slow
def test_a_gateway_refuses_a_token_older_than_its_users_revocation_and_so_does_one_started_after_it(
    settings: Settings, user_9201: int
) -> None:
    old_token = token_for(settings, user_id=9201, now=time.time() - 60)

    async def revoke_while_connected(proc: ServiceProcess) -> tuple[int | None, str]:
        keyspace = Keyspace(settings)
        try:
            async with await opened(proc, old_token) as ws:
                await publish_revocation(keyspace, 9201, revocation_retention_s(settings.jwt_expires_seconds))
                return await close_code(ws)  # the live revocation reached this gateway
        finally:
            await keyspace.close()

    async def attempt(proc: ServiceProcess, token: str) -> tuple[list[str | bytes], tuple[int | None, str]]:
        """What a new socket receives before it is closed: nothing at all when refused at the upgrade."""
        frames: list[str | bytes] = []
        async with await open_socket(proc, token) as ws:
            try:
                async with asyncio.timeout(10):
                    while True:
                        frames.append(await ws.recv())
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                return frames, ((rcvd.code, rcvd.reason) if rcvd is not None else (None, ""))

    async def stays_open(proc: ServiceProcess, token: str) -> str:
        async with await opened(proc, token) as ws:
            await ws.send('{"type":"ping"}')
            return str(await asyncio.wait_for(ws.recv(), 10))

    with running("ccsm_gateway", settings, extra_env={"LOG_LEVEL": "info"}) as first:
        first.wait_for_line("revocation log read")
        live = asyncio.run(revoke_while_connected(first))
        on_first = asyncio.run(attempt(first, old_token))
        with running("ccsm_gateway", settings, extra_env={"LOG_LEVEL": "info"}) as later:
            later.wait_for_line("revocation log read")
            on_later = asyncio.run(attempt(later, old_token))
            fresh = asyncio.run(stays_open(later, token_for(settings, user_id=9201, now=time.time() + 1)))

    assert live == (4401, "Unauthorized")
    assert on_first == ([], (4401, "Unauthorized"))
    assert on_later == ([], (4401, "Unauthorized"))
    assert '"pong"' in fresh
