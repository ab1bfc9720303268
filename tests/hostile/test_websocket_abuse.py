"""Hostile WebSocket clients against the running service set: oversized frames, binary garbage and a
1,000-messages-per-second flood. The abuser is dealt with; everyone else keeps being served; nothing crashes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.harness import ServiceProcess, close_code

pytestmark = pytest.mark.slow


@pytest.fixture
def desktop_headers(hostile_settings: Settings) -> dict[str, str]:
    """A token of the admin issued now, its row active and unrevoked: the hostile tests before these may have
    deactivated the admin or changed its password (which revokes its earlier tokens, and the gateway checks)."""
    conn = connect_sync(hostile_settings, hostile_settings.db_name)
    try:
        conn.cursor().execute("UPDATE users SET is_active = 1, tokens_revoked_at = NULL WHERE id = 1")
    finally:
        conn.close()
    token = TokenService(hostile_settings.jwt_secret).issue(1, 1, "admin", now=time.time() + 1)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def desktop(stack: ServiceProcess, desktop_headers: dict[str, str]) -> Iterator[ClientConnection]:
    with connect(f"{stack.ws_url}/ws/desktop", additional_headers=desktop_headers, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        yield ws


def reply(ws: ClientConnection) -> dict[str, object]:
    """The next frame that answers this client: `db-changed` events (broadcast to every socket after the other
    tests' writes on this shared stack) may arrive in between and are skipped."""
    while True:
        frame: dict[str, object] = json.loads(ws.recv(timeout=10))
        if frame["type"] != "db-changed":
            return frame


def test_an_oversized_frame_closes_that_socket_with_1009(desktop: ClientConnection) -> None:
    desktop.send("x" * (64 * 1024 + 1))
    assert close_code(desktop) == 1009  # RFC 6455 §7.4.1: message too big


def test_binary_garbage_is_tolerated_and_the_socket_still_answers(desktop: ClientConnection) -> None:
    desktop.send(os.urandom(512))
    desktop.send(b"\x00\xff{not json")
    desktop.send(json.dumps({"type": "ping"}))
    assert reply(desktop)["type"] == "pong"


def test_a_thousand_messages_a_second_do_not_starve_other_clients(
    stack: ServiceProcess, desktop_headers: dict[str, str], desktop: ClientConnection
) -> None:
    with connect(f"{stack.ws_url}/ws/desktop", additional_headers=desktop_headers) as bystander:
        assert json.loads(bystander.recv(timeout=10))["type"] == "connected"
        started = time.monotonic()
        for i in range(1000):
            desktop.send(json.dumps({"type": "ping", "n": i}))
        sent_in = time.monotonic() - started
        bystander.send(json.dumps({"type": "ping"}))
        assert reply(bystander)["type"] == "pong"
        with httpx.Client(base_url=stack.base_url, timeout=10) as client:
            assert client.get("/ready").json() == {"status": "ready"}
    pongs, code = 0, None
    try:
        while pongs < 1000:
            if reply(desktop)["type"] == "pong":
                pongs += 1
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    # Either every ping was answered, or the flooder was cut off (1008 policy / 1013 too slow to read its
    # answers) — never an abnormal close.
    assert pongs == 1000 or code in (1008, 1013), (pongs, code)
    assert sent_in < 5
    assert stack.proc.poll() is None
