"""Memory after sockets close (issue 12 item 5): closed connections are not kept by the process's timers, and a
burst of closes ends in one `malloc_trim`, on a worker thread, once the burst is over."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

from ccsm_gateway.memory import Trimmer
from ccsm_gateway.transport import Heartbeat


class Closed:
    """What the heartbeat needs of a connection (its slot); -1 once removed."""

    slot = -1

    def beat(self) -> None:
        raise AssertionError("a removed connection was visited")

    def expire(self) -> None:
        raise AssertionError("a removed connection was expired")


def test_closed_connections_are_not_kept_alive_by_their_token_expiry_entries() -> None:
    async def scenario() -> tuple[int, int, int]:
        heartbeat = Heartbeat(30.0)
        conns: list[Any] = [Closed() for _ in range(2000)]
        refs = [weakref.ref(c) for c in conns]
        for c in conns:
            heartbeat.add(c, expires_at=4_000_000_000.0)  # tokens valid for hours
        for c in conns:
            heartbeat.remove(c)
        heartbeat.stop()
        conns.clear()
        gc.collect()
        return sum(r() is not None for r in refs), len(heartbeat.expiries), heartbeat.open

    alive, entries, still_open = asyncio.run(scenario())
    assert alive <= 64  # at most the heap's slack
    assert entries <= 64
    assert still_open == 0


def test_a_burst_of_closes_ends_in_one_trim_on_a_worker_thread_once_it_is_quiet() -> None:
    calls: list[tuple[int, str]] = []

    def fake_trim(pad: int) -> int:
        calls.append((pad, threading.current_thread().name))
        return 1

    async def scenario() -> tuple[list[int], int]:
        trimmer = Trimmer(after_closes=100, quiet_s=0.0, trim=fake_trim)
        seen = []
        for _ in range(99):
            trimmer.note_closed()
        trimmer.tick()  # too few closes
        seen.append(len(calls))
        trimmer.note_closed()
        trimmer.tick()
        assert trimmer._running is not None
        await trimmer._running
        await asyncio.sleep(0)  # the done-callback runs on the loop
        seen.append(len(calls))
        trimmer.tick()  # nothing closed since: no second trim
        seen.append(len(calls))
        return seen, trimmer.trims

    seen, trims = asyncio.run(scenario())
    assert seen == [0, 1, 1]
    assert trims == 1
    assert calls[0][0] == 0
    assert calls[0][1] != threading.main_thread().name
