"""Unknown user, wrong password and inactive user: same status, same body, same time (fix 4), and the audit
trail that tells them apart for operators without ever logging a secret."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import bcrypt
import pytest

from ccsm_auth.limits import Limit, LoginLimits
from ccsm_core.db import connect_sync

ROOMY = LoginLimits(account_address=Limit(1000, 60), account=Limit(1000, 60), ip=Limit(1000, 60))
FAILURES = {
    "unknown user": {"username": "nobody", "password": "Admin#2025"},
    "wrong password (cheap bcrypt row)": {"username": "admin", "password": "Admin#2026"},
    "wrong password (legacy plaintext row)": {"username": "pnair", "password": "legacy124"},
    "inactive user, right password": {"username": "tbecker", "password": "oldpass"},
}


def test_every_failure_answers_the_same_status_and_body(auth_client) -> None:
    with auth_client(limits=ROOMY) as client:
        answers = {name: client.post("/api/login", json=body) for name, body in FAILURES.items()}
    assert {(r.status_code, r.content) for r in answers.values()} == {
        (401, b'{"error":"Invalid username or password"}')
    }


def test_every_failure_takes_the_same_time_within_ten_percent(auth_client, auth_settings) -> None:
    """BCRYPT_ROUNDS=10 while admin's hash is cost 8 and two rows are plaintext: without the dummy hash and the
    timing floor, the unknown user and the plaintext rows would answer at once and admin in a quarter of the time."""
    cheap = bcrypt.hashpw(b"Admin#2025", bcrypt.gensalt(8, prefix=b"2a")).decode()
    conn = connect_sync(auth_settings, auth_settings.db_name)
    try:
        conn.cursor().execute("UPDATE users SET password = %s WHERE id = 1", (cheap,))
    finally:
        conn.close()
    rounds: list[dict[str, float]] = []
    with auth_client(limits=ROOMY, bcrypt_rounds=10) as client:
        for body in FAILURES.values():  # warm-up: the pool's threads, the connections
            client.post("/api/login", json=body)
        for _ in range(15):
            took: dict[str, float] = {}
            for name, body in FAILURES.items():  # interleaved, so machine noise hits every kind alike
                started = time.perf_counter()
                r = client.post("/api/login", json=body)
                took[name] = time.perf_counter() - started
                assert r.status_code == 401
            rounds.append(took)
    # Each kind relative to its own round's mean (bursts of load on this shared machine cancel out), then the
    # median over rounds.
    relative = {name: statistics.median(t[name] / statistics.fmean(t.values()) for t in rounds) for name in FAILURES}
    assert max(relative.values()) / min(relative.values()) < 1.10, relative
    # And the floor is real: no kind answers much faster than the others.
    medians = {name: statistics.median(t[name] for t in rounds) for name in FAILURES}
    assert min(medians.values()) > 0.8 * max(medians.values()), medians


_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit records as the JSON log lines carry them: the message and the extra fields."""
    return [
        {"msg": r.getMessage(), **{k: v for k, v in vars(r).items() if k not in _STANDARD}}
        for r in caplog.records
        if r.name == "ccsm.audit"
    ]


def test_each_outcome_is_one_audit_event_without_secrets(auth_client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ccsm.audit")
    tight = LoginLimits(account_address=Limit(2, 60), ip=Limit(100, 60))
    with auth_client(limits=tight) as client:
        token = client.post("/api/login", json={"username": "pnair", "password": "legacy123"}).json()["accessToken"]
        client.post("/api/login", json={"username": "hunter2-typed-as-name", "password": "x-secret-x"})
        client.post("/api/login", json={"username": "admin", "password": "x-secret-x"})
        client.post("/api/login", json={"username": "admin", "password": "x-secret-x"})
        client.post("/api/login", json={"username": "admin", "password": "x-secret-x"})
        client.post("/api/login", json={"username": "tbecker", "password": "oldpass"})
        desktop = client.post("/api/desktop/login-authcode", json={"code": "888"}).json()["accessToken"]
        client.post("/api/desktop/login-authcode", json={"code": "31337"})
    got = events(caplog)
    names = [(e["event"], e.get("reason"), e.get("endpoint")) for e in got]
    assert names == [
        ("auth.password.upgraded", None, None),
        ("auth.login.succeeded", None, "login"),
        ("auth.login.failed", "unknown_user", "login"),
        ("auth.login.failed", "bad_password", "login"),
        ("auth.login.failed", "bad_password", "login"),
        ("auth.login.rate_limited", None, "login"),
        ("auth.login.failed", "inactive", "login"),
        ("auth.login.succeeded", None, "authcode"),
        ("auth.login.failed", "unknown_or_inactive_code", "authcode"),
    ]
    assert got[1]["userId"] == 3
    assert got[1]["ip"] == "203.0.113.7"
    assert got[0]["fromScheme"] == "plaintext"
    assert got[0]["toScheme"] == "bcrypt"
    assert got[2]["userId"] is None
    assert (got[5]["scope"], got[5]["userId"]) == ("account", 1)
    assert len(got[2]["nameRef"]) == 12
    text = repr(got)
    for secret in ("legacy123", "x-secret-x", "oldpass", "hunter2-typed-as-name", "31337", "888", token, desktop):
        assert secret not in text
