"""The auth service as it runs in production: `python -m ccsm_auth` under uvicorn, JSON log lines on stdout."""

from __future__ import annotations

import dataclasses

import httpx

from ccsm_core.settings import Settings
from tests.harness import running


def test_the_real_process_logs_in_and_writes_audit_lines_without_secrets(auth_settings: Settings) -> None:
    settings = dataclasses.replace(auth_settings, log_level="info", trusted_proxies=("127.0.0.1",))
    with running("ccsm_auth", settings) as proc:
        proc.wait_for_line(f"Auth HTTP server running on port {proc.port}")
        with httpx.Client(base_url=proc.base_url, timeout=10) as client:
            ok = client.post(
                "/api/login",
                json={"username": "pnair", "password": "legacy123"},
                headers={"X-Forwarded-For": "198.51.100.23"},
            )
            bad = client.post("/api/login", json={"username": "admin", "password": "not-it-at-all"})
            desktop = client.post("/api/desktop/login-authcode", json={"code": "777"})
            health = client.get("/health")
        proc.wait_for_line('"auth.login.succeeded"')
        proc.wait_for_line('"bad_password"')
        proc.wait_for_line('"endpoint":"authcode"')
    assert ok.status_code == 200
    assert (bad.status_code, bad.json()) == (401, {"error": "Invalid username or password"})
    assert desktop.json()["login"] == "mreyes"
    assert health.json()["service"] == "auth"
    audit = [e for e in proc.log_events() if str(e.get("event", "")).startswith("auth.")]
    assert [(e["event"], e.get("endpoint")) for e in audit] == [
        ("auth.password.upgraded", None),
        ("auth.login.succeeded", "login"),
        ("auth.login.failed", "login"),
        ("auth.login.succeeded", "authcode"),
    ]
    assert audit[1]["ip"] == "198.51.100.23"  # X-Forwarded-For from a trusted proxy (the loopback peer)
    assert audit[2]["ip"] == "127.0.0.1"
    assert all(e["service"] == "auth" and "requestId" in e for e in audit)
    output = "\n".join(proc.lines)
    for secret in ("legacy123", "not-it-at-all", ok.json()["accessToken"], desktop.json()["accessToken"]):
        assert secret not in output
