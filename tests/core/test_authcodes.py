"""Issue 12 item 1, longer codes: the AUTHCODE_MIN_LENGTH default per mode, the count `make audit` and the auth
service's start-up log report (never the codes), and `python -m ccsm_core authcodes rotate-short`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ccsm_auth.app import create_app as create_auth
from ccsm_core.settings import ConfigError, Settings, load_settings
from tests.api.part1_support import channel, next_message
from tests.api.transcript import query
from tests.harness import ROOT, running

STRONG = "s" * 32
SEED_CODES = ("555", "777", "888", "111", "444")


@pytest.mark.parametrize(("mode", "expected"), [("local", 0), ("remotetest", 6), ("remote", 6)])
def test_the_minimum_is_6_where_the_service_faces_the_internet_and_none_in_local(
    tmp_path: Path, mode: str, expected: int
) -> None:
    env = {"NODE_ENV": mode, "AUTH_REQUIRED": "true", "JWT_SECRET": STRONG}
    assert load_settings("auth", environ=env, cwd=tmp_path).authcode_min_length == expected
    explicit = load_settings("auth", environ={**env, "AUTHCODE_MIN_LENGTH": "8"}, cwd=tmp_path)
    assert explicit.authcode_min_length == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTHCODE_MIN_LENGTH", "33"), ("AUTHCODE_MIN_LENGTH", "-1"), ("AUTHCODE_FAILURES_GLOBAL", "0")],
)
def test_an_impossible_policy_stops_the_process_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings("auth", environ={name: value}, cwd=tmp_path)


def test_the_login_limits_are_settings(tmp_path: Path) -> None:
    from ccsm_auth.limits import Limit, LoginLimits

    env = {
        "LOGIN_LIMIT_WINDOW": "5m",
        "LOGIN_FAILURES_PER_ACCOUNT_ADDRESS": "7",
        "LOGIN_FAILURES_PER_ACCOUNT": "70",
        "LOGIN_FAILURES_PER_ADDRESS": "40",
        "AUTHCODE_FAILURES_GLOBAL": "30",
    }
    limits = LoginLimits.from_settings(load_settings("auth", environ=env, cwd=tmp_path))
    assert (limits.account_address, limits.account, limits.ip, limits.authcode_global) == (
        Limit(7, 300),
        Limit(70, 300),
        Limit(40, 300),
        Limit(30, 300),
    )
    assert LoginLimits.from_settings(load_settings("auth", environ={}, cwd=tmp_path)) == LoginLimits()


def command(settings: Settings, *args: str, minimum: int = 6) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **settings.to_env(), "AUTHCODE_MIN_LENGTH": str(minimum)}
    return subprocess.run(
        [sys.executable, "-m", "ccsm_core", "authcodes", *args],
        env=env,
        cwd=ROOT / "tests",  # no stray .env files are read from here
        capture_output=True,
        text=True,
        timeout=60,
    )


def codes(settings: Settings) -> dict[int, tuple[str, int]]:
    rows = query(settings, "SELECT id, authcode, is_active FROM users ORDER BY id")
    return {int(r["id"]): (str(r["authcode"]), int(r["is_active"])) for r in rows}


def test_the_audit_counts_active_users_with_short_codes_and_never_shows_a_code(fresh_db: Settings) -> None:
    out = command(fresh_db, "audit")
    assert out.returncode == 0, out.stderr
    assert "authcodes: 4 active user(s) with a code shorter than AUTHCODE_MIN_LENGTH=6" in out.stdout
    assert not any(code in out.stdout + out.stderr for code in SEED_CODES)
    assert "nothing to check" in command(fresh_db, "audit", minimum=0).stdout


def test_make_audit_runs_the_code_count_after_the_configuration() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\naudit:", 1)[1].split("\n\n", 1)[0]
    assert "config audit" in recipe
    assert "authcodes audit" in recipe


def test_a_dry_run_lists_the_users_and_changes_nothing(fresh_db: Settings) -> None:
    before = codes(fresh_db)
    out = command(fresh_db, "rotate-short")
    assert out.returncode == 0, out.stderr
    assert codes(fresh_db) == before
    assert out.stdout.count("would rotate:") == 5  # the inactive user too: reactivation must not bring it back
    assert "run with --apply" in out.stdout
    assert not any(code in out.stdout for code in SEED_CODES)


def test_rotation_gives_unique_random_codes_of_the_policy_length_printed_once_revoked_and_announced(
    fresh_db: Settings,
) -> None:
    with channel(fresh_db, "events:db-changed") as changes, channel(fresh_db, "events:revocations") as revocations:
        out = command(fresh_db, "rotate-short", "--apply")
        changed = next_message(changes)
        revoked = sorted(int(m) for m in (next_message(revocations) for _ in range(5)) if m is not None)
    assert out.returncode == 0, out.stderr
    printed = dict(
        (int(fields["id"]), fields["code"])
        for fields in (
            dict(p.split("=", 1) for p in line.split("\t")) for line in out.stdout.splitlines() if "\t" in line
        )
    )
    after = codes(fresh_db)
    assert printed == {user_id: code for user_id, (code, _) in after.items()}
    assert all(len(code) == 6 and code.isdigit() for code in printed.values())
    assert len(set(printed.values())) == 5
    assert changed is not None
    assert orjson.loads(changed)["reason"] == "authcodes-rotated"
    assert revoked == [1, 2, 3, 4, 5]
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM users WHERE tokens_revoked_at IS NULL") == [{"n": 0}]
    with TestClient(create_auth(fresh_db)) as auth:
        old = auth.post("/api/desktop/login-authcode", json={"code": "555"})
        new = auth.post("/api/desktop/login-authcode", json={"code": printed[1]})
    assert old.json() is None
    assert new.json()["login"] == "admin"
    assert "shown once" in out.stdout
    again = command(fresh_db, "rotate-short", "--apply")
    assert "0 user(s) rotated" in again.stdout  # nothing is short any more


def test_rotation_can_write_the_codes_to_a_new_private_file_instead(fresh_db: Settings, tmp_path: Path) -> None:
    target = tmp_path / "codes.txt"
    out = command(fresh_db, "rotate-short", "--apply", "--output", str(target))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    written = target.read_text(encoding="utf-8")
    assert written.count("code=") == 5
    assert "code=" not in out.stdout
    refused = command(fresh_db, "rotate-short", "--apply", "--output", str(target))  # never overwritten
    assert refused.returncode == 1
    assert target.read_text(encoding="utf-8") == written


@pytest.mark.slow
def test_the_auth_service_logs_the_count_at_start_up_without_the_codes(fresh_db: Settings) -> None:
    with running("ccsm_auth", fresh_db, extra_env={"AUTHCODE_MIN_LENGTH": "6"}) as proc:
        line = proc.wait_for_line('"auth.authcodes.short"')
    event: dict[str, Any] = orjson.loads(line)
    assert (event["count"], event["minLength"], event["level"]) == (4, 6, "warning")
    assert not any(f'"{code}"' in "\n".join(proc.lines) for code in SEED_CODES)
