"""Fan-out across real processes: api writes reach every gateway, subscription gaps end in `resync`, a slow
client is dropped without holding back the others, and SIGTERM closes every socket with 1012."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from ccsm_core.settings import Settings
from tests.gateway.rawclient import CLOSE, TEXT, RawSocket, close_code
from tests.gateway.wsclient import DB_CHANGED, opened, publish, recv_type, token_for
from tests.gateway.wsclient import close_code as ws_close_code
from tests.harness import ServiceProcess, running

pytestmark = pytest.mark.slow

GATEWAY_ENV = {"LOG_LEVEL": "info"}  # the tests wait on info lines (startup, subscription)
DEBUG_ENV = {"LOG_LEVEL": "debug"}  # and on "slow client closed", a per-connection line, so debug (issue 12 item 11)
WRITE_REASONS = {"pool-query", "pool-execute", "connection-query", "connection-execute", "transaction-commit"}


@pytest.fixture
def gateway_pair(settings: Settings) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    with running("ccsm_gateway", settings, GATEWAY_ENV) as a, running("ccsm_gateway", settings, GATEWAY_ENV) as b:
        a.wait_for_line("subscribed to db-changed")
        b.wait_for_line("subscribed to db-changed")
        yield a, b


def test_a_write_through_the_api_reaches_clients_on_both_gateways(
    fresh_db: Settings, gateway_pair: tuple[ServiceProcess, ServiceProcess]
) -> None:
    first, second = gateway_pair
    admin = token_for(fresh_db, user_id=1, role=1)

    with running("ccsm_api", fresh_db, GATEWAY_ENV) as api:

        async def scenario() -> tuple[int, list[dict[str, object]]]:
            async with (
                await opened(first, token_for(fresh_db, user_id=2)) as on_first,
                await opened(second, token_for(fresh_db, user_id=3)) as on_second,
            ):
                async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
                    r = await http.post(
                        "/api/lookups/task-data-definitions",
                        json={"label": f"Fan-out check {time.time_ns()}", "valueType": "int"},
                        headers={"Authorization": f"Bearer {admin}"},
                    )
                got = await asyncio.gather(recv_type(on_first, "db-changed"), recv_type(on_second, "db-changed"))
                return r.status_code, list(got)

        status, events = asyncio.run(scenario())
    assert status == 201
    for event in events:
        assert list(event) == ["type", "reason", "ts"]
        assert event["reason"] in WRITE_REASONS
    assert events[0] == events[1]  # one publish, the same frame on both gateways


def subscription_ids(settings: Settings, proc: ServiceProcess) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        listing = client.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    finally:
        client.close()
    text = listing if isinstance(listing, str) else "\n".join(str(x) for x in listing)
    name = f"{settings.redis_prefix}ws-gateway:{proc.proc.pid}"
    ids = []
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
        if fields.get("name") == name:
            ids.append(fields["id"])
    return ids


def kill_subscription(settings: Settings, proc: ServiceProcess) -> int:
    ids = subscription_ids(settings, proc)
    assert ids, "the gateway's named subscription connection was not found"
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return sum(int(client.execute_command("CLIENT", "KILL", "ID", i)) for i in ids)
    finally:
        client.close()


def test_every_client_receives_resync_when_the_subscription_is_killed_and_comes_back(
    settings: Settings, gateway_pair: tuple[ServiceProcess, ServiceProcess]
) -> None:
    victim, bystander = gateway_pair

    async def scenario() -> tuple[list[dict[str, object]], dict[str, object]]:
        async with (
            await opened(victim, token_for(settings, user_id=2)) as a,
            await opened(victim, token_for(settings, user_id=3)) as b,
            await opened(bystander, token_for(settings, user_id=2)) as c,
        ):
            assert kill_subscription(settings, victim) == 1
            resyncs = await asyncio.gather(recv_type(a, "db-changed", 15), recv_type(b, "db-changed", 15))
            victim.wait_for_line("subscription re-established")
            # The new subscription carries events again.
            await publish(settings, DB_CHANGED, orjson.dumps({"type": "db-changed", "reason": "pool-query", "ts": 1}))
            after = await recv_type(a, "db-changed")
            await recv_type(c, "db-changed")
            return list(resyncs), after

    resyncs, after = asyncio.run(scenario())
    for event in resyncs:
        assert list(event) == ["type", "reason", "ts"]
        assert event["reason"] == "resync"
    assert after["reason"] == "pool-query"
    assert len(subscription_ids(settings, victim)) == 1  # exactly one subscription per process again


def test_a_slow_client_that_never_reads_is_dropped_with_1013_while_a_fast_one_keeps_receiving(
    settings: Settings,
) -> None:
    payload = orjson.dumps({"type": "db-changed", "reason": "pool-query", "pad": "x" * 16_000, "ts": 1})
    with running("ccsm_gateway", settings, DEBUG_ENV) as gw:
        gw.wait_for_line("subscribed to db-changed")
        slow = RawSocket(gw.port, token_for(settings, user_id=3), rcvbuf=4096)

        async def scenario() -> tuple[int, int]:
            async with await opened(gw, token_for(settings, user_id=2), max_size=None) as fast:
                sent = 0
                client = redis.asyncio.Redis.from_url(settings.redis_url)
                try:
                    while "slow client closed" not in "\n".join(gw.lines[-50:]):
                        async with client.pipeline(transaction=False) as pipe:
                            for _ in range(50):
                                pipe.publish(settings.redis_prefix + DB_CHANGED, payload)
                            await pipe.execute()
                        sent += 50
                        for _ in range(50):
                            await recv_type(fast, "db-changed")
                        assert sent < 20_000, "the slow client was never dropped"
                        await asyncio.to_thread(_pump_log, gw)
                    # Dropped: the fast socket still gets the next event.
                    await client.publish(settings.redis_prefix + DB_CHANGED, b'{"type":"db-changed","reason":"after"}')
                    after = await recv_type(fast, "db-changed")
                    assert after["reason"] == "after"
                finally:
                    await client.aclose()
                return sent, len(gw.lines)

        sent, _ = asyncio.run(scenario())
        # The slow peer, once it reads, finds its backlog then a 1013 close: nothing after it.
        opcodes = []
        while True:
            opcode, data = slow.frame(within=15)
            opcodes.append(opcode)
            if opcode == CLOSE:
                assert close_code(data) == 1013
                break
        slow.close()
    assert sent >= 50
    assert opcodes[0] == TEXT
    assert opcodes.count(TEXT) < sent  # it was cut off, not fed everything


def _pump_log(proc: ServiceProcess) -> None:
    """Pull the lines the process printed so far into `proc.lines` (a short bounded wait, not a sleep)."""
    with contextlib.suppress(TimeoutError):
        proc.wait_for_line("slow client closed", timeout=0.2)


def test_sigterm_closes_every_socket_with_1012_and_exits_within_the_grace_period(settings: Settings) -> None:
    env = {**GATEWAY_ENV, "SHUTDOWN_GRACE_MS": "5000", "SHUTDOWN_FORCE_MS": "10000"}
    proc = ServiceProcess("ccsm_gateway", settings, env)
    proc.wait_started()

    async def scenario() -> tuple[list[tuple[int | None, str]], float]:
        sockets = [await opened(proc, token_for(settings, user_id=u)) for u in (1, 2, 3)]
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        codes = await asyncio.gather(*(ws_close_code(ws, 10) for ws in sockets))
        for ws in sockets:
            await ws.close()
        return list(codes), started

    try:
        codes, started = asyncio.run(scenario())
        code = proc.wait_exit(15)
        took = time.monotonic() - started
    finally:
        proc.stop()
    assert [c for c, _ in codes] == [1012, 1012, 1012]
    assert code == 0
    assert took < 5.0


def test_sigterm_does_not_wait_for_a_peer_that_stopped_reading(settings: Settings) -> None:
    """A desktop that vanished (or stopped reading) leaves unsent bytes behind: the 1012 close cannot be delivered,
    and a graceful transport close would wait for it until the force limit. Shutdown still ends in the grace."""
    env = {**DEBUG_ENV, "SHUTDOWN_GRACE_MS": "5000", "SHUTDOWN_FORCE_MS": "20000"}
    proc = ServiceProcess("ccsm_gateway", settings, env)
    stuck: RawSocket | None = None
    try:
        proc.wait_started()
        proc.wait_for_line("subscribed to db-changed")
        stuck = RawSocket(proc.port, token_for(settings, user_id=3), rcvbuf=4096)
        payload = orjson.dumps({"type": "db-changed", "reason": "pool-query", "pad": "x" * 16_000, "ts": 1})
        client = redis.Redis.from_url(settings.redis_url)
        try:
            pipe = client.pipeline(transaction=False)
            for _ in range(500):  # 8 MB: more than the peer's window, the kernel's send buffer and the queue
                pipe.publish(settings.redis_prefix + DB_CHANGED, payload)
            pipe.execute()
        finally:
            client.close()
        proc.wait_for_line("slow client closed")  # its queue overflowed: the peer is not draining
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait_exit(30)
        took = time.monotonic() - started
    finally:
        if stuck is not None:
            stuck.close()
        proc.stop()
    assert code == 0
    assert took < 5.0
