"""The server settings the gateway relies on (ccsm_core.server): protocol ping every 30 s with a 30 s pong
deadline (dead peers dropped, contract-core §8.7), 64 KiB frames, no per-message deflate (fix 6)."""

from __future__ import annotations

import time

import pytest
from starlette.applications import Starlette

from ccsm_core.server import uvicorn_config
from ccsm_core.settings import Settings
from tests.gateway.rawclient import PING, TEXT, RawSocket
from tests.gateway.wsclient import token_for
from tests.harness import running


def test_the_gateway_server_pings_every_30_s_drops_silent_peers_after_30_s_caps_frames_and_never_compresses(
    settings: Settings,
) -> None:
    config = uvicorn_config(Starlette(), settings, ws=True)
    assert config.ws == "websockets-sansio"
    assert config.ws_ping_interval == 30.0
    assert config.ws_ping_timeout == 30.0
    assert config.ws_max_size == 64 * 1024
    assert config.ws_per_message_deflate is False


@pytest.mark.slow
def test_a_connected_socket_receives_a_protocol_ping_after_30_seconds(settings: Settings) -> None:
    with running("ccsm_gateway", settings, {"LOG_LEVEL": "info"}) as gw:
        gw.wait_for_line("subscribed to db-changed")
        peer = RawSocket(gw.port, token_for(settings))
        try:
            opened = time.monotonic()
            first, _ = peer.frame()
            opcode, _ = peer.frame(within=40)
            waited = time.monotonic() - opened
        finally:
            peer.close()
    assert first == TEXT
    assert opcode == PING
    assert 29.0 <= waited <= 35.0
