"""Graceful shutdown of a real uvicorn process (runbook §8, contract-core §8.5)."""

from __future__ import annotations

import http.client
import signal
import threading
from typing import Any

import orjson
import pytest

from ccsm_core.settings import Settings
from tests.harness import ROOT, ServiceProcess

pytestmark = pytest.mark.slow


def start(settings: Settings, grace_ms: int, force_ms: int) -> ServiceProcess:
    return ServiceProcess(
        "tests.core.slow_service",
        settings,
        extra_env={
            "PYTHONPATH": str(ROOT),
            "SHUTDOWN_GRACE_MS": str(grace_ms),
            "SHUTDOWN_FORCE_MS": str(force_ms),
            "LOG_LEVEL": "info",
        },
    ).wait_started()


def request_in_thread(port: int, path: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            result["status"] = resp.status
            result["body"] = orjson.loads(resp.read())
        except Exception as exc:
            result["error"] = repr(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_sigterm_lets_an_in_flight_request_finish_and_exits_0(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    thread, result = request_in_thread(proc.port, "/slow?ms=1500")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    proc.wait_for_line("shutdown started")
    thread.join(20)
    assert result.get("status") == 200, result
    assert result["body"]["readyAtEnd"] == 503  # /ready turned 503 the moment the signal arrived
    assert proc.wait_exit(20) == 0
    messages = [e.get("msg") for e in proc.log_events()]
    assert "shutdown complete" in messages
    assert "closing resources" in messages


def test_new_connections_are_refused_once_shutdown_started(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    thread, _ = request_in_thread(proc.port, "/slow?ms=1500")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    proc.wait_for_line("Waiting for connections to close")  # logged after uvicorn closed its listeners
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        conn.request("GET", "/health")
    thread.join(20)
    assert proc.wait_exit(20) == 0


def test_a_request_still_running_at_the_force_limit_exits_1(settings: Settings) -> None:
    proc = start(settings, grace_ms=500, force_ms=1500)
    thread, result = request_in_thread(proc.port, "/slow?ms=20000")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit(15) == 1
    thread.join(10)
    assert result.get("status") == 503  # cancelled at the force limit, answered by the error table
    assert result["body"] == {"error": "Service unavailable"}
    messages = [e.get("msg") for e in proc.log_events()]
    assert "grace period elapsed with requests in flight" in messages
    assert "shutdown forced" in messages


def test_a_second_signal_does_not_cut_the_drain_short(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    thread, result = request_in_thread(proc.port, "/slow?ms=1500")
    proc.wait_for_line("slow request started")
    proc.signal(signal.SIGTERM)
    proc.wait_for_line("shutdown started")
    proc.signal(signal.SIGINT)
    proc.wait_for_line("signal ignored, shutdown already in progress")
    thread.join(20)
    assert result.get("status") == 200
    assert proc.wait_exit(20) == 0


def test_an_idle_service_exits_0_promptly_on_sigint(settings: Settings) -> None:
    proc = start(settings, grace_ms=5000, force_ms=10000)
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) == 0
