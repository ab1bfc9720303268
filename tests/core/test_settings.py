"""The env contract: defaults as in the old backend, mode files, and every refusal as one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ccsm_core.settings import (
    ConfigError,
    Settings,
    env_table_markdown,
    env_vars,
    load_settings,
    parse_duration_seconds,
)

STRONG = "s" * 32
REMOTE = {"NODE_ENV": "remote", "AUTH_REQUIRED": "true", "JWT_SECRET": STRONG}


def load(env: dict[str, str], tmp_path: Path) -> Settings:
    return load_settings("api", environ=env, cwd=tmp_path)


def test_defaults_match_the_old_backend(tmp_path: Path) -> None:
    s = load({}, tmp_path)
    assert s.node_env == "local"
    assert s.port == 4000
    assert s.jwt_expires_in == "8h"
    assert s.jwt_expires_seconds == 8 * 3600
    assert s.bcrypt_rounds == 12
    assert s.shutdown_grace_ms == 15000
    assert s.shutdown_force_ms == 30000
    assert s.use_helmet is False
    assert s.auth_required is False
    assert s.body_limit_bytes == 100 * 1024
    assert s.db_password == ""


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_truthy_values_turn_flags_on(tmp_path: Path, value: str) -> None:
    s = load({"USE_HELMET": value, "AUTH_REQUIRED": value, "JWT_SECRET": "x"}, tmp_path)
    assert s.use_helmet is True
    assert s.auth_required is True


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("8h", 28800), ("30m", 1800), ("7d", 604800), ("2 days", 172800), ("3600", 3600), ("1.5h", 5400)],
)
def test_jwt_expiry_accepts_ms_syntax_and_bare_seconds(raw: str, seconds: int) -> None:
    assert parse_duration_seconds(raw) == seconds


@pytest.mark.parametrize(("raw", "rounds"), [("4", 8), ("20", 15), ("10.9", 10), ("", 12), ("13", 13)])
def test_bcrypt_rounds_are_clamped_like_the_old_backend(tmp_path: Path, raw: str, rounds: int) -> None:
    assert load({"BCRYPT_ROUNDS": raw}, tmp_path).bcrypt_rounds == rounds


def test_empty_values_fall_back_to_defaults(tmp_path: Path) -> None:
    s = load({"JWT_EXPIRES_IN": "", "PORT": " ", "SHUTDOWN_GRACE_MS": ""}, tmp_path)
    assert s.jwt_expires_in == "8h"
    assert s.port == 4000
    assert s.shutdown_grace_ms == 15000


def test_a_valid_remote_configuration_loads(tmp_path: Path) -> None:
    s = load({**REMOTE, "CORS_ORIGINS": "https://portal.example.com", "TRUSTED_PROXIES": "10.0.0.0/16"}, tmp_path)
    assert s.node_env == "remote"
    assert s.cors_origins == ("https://portal.example.com",)
    assert s.trusted_proxies == ("10.0.0.0/16",)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({**REMOTE, "AUTH_REQUIRED": "false"}, "AUTH_REQUIRED"),
        ({"NODE_ENV": "remotetest", "JWT_SECRET": STRONG}, "AUTH_REQUIRED"),
        ({**REMOTE, "JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"AUTH_REQUIRED": "true"}, "JWT_SECRET"),
        ({"DB_PORT": "mysql"}, "DB_PORT"),
        ({"PORT": "80a"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"SHUTDOWN_FORCE_MS": "abc"}, "SHUTDOWN_FORCE_MS"),
        ({"SHUTDOWN_GRACE_MS": "20000", "SHUTDOWN_FORCE_MS": "10000"}, "SHUTDOWN_FORCE_MS"),
        ({"NODE_ENV": "production"}, "NODE_ENV"),
        ({"JWT_EXPIRES_IN": "forever"}, "JWT_EXPIRES_IN"),
        ({"BCRYPT_ROUNDS": "abc"}, "BCRYPT_ROUNDS"),
        ({"USE_HELMET": "maybe"}, "USE_HELMET"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ({"CORS_ORIGINS": "null"}, "CORS_ORIGINS"),
        ({"TRUSTED_PROXIES": "not-an-ip"}, "TRUSTED_PROXIES"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"PASSWORD_HASH": "md5"}, "PASSWORD_HASH"),
        ({**REMOTE, "JWT_SECRET_PREVIOUS": "short"}, "JWT_SECRET_PREVIOUS"),
    ],
)
def test_unsafe_or_invalid_configuration_is_refused_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(env, tmp_path)
    message = str(info.value)
    assert variable in message
    assert "\n" not in message


def test_the_mode_file_is_read_and_real_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env.remotetest").write_text(
        "# comment\nAUTH_REQUIRED=true\nexport JWT_SECRET='" + STRONG + "'\nPORT=5000\nDB_NAME=from_file\n"
    )
    (tmp_path / ".env").write_text("DB_NAME=from_dotenv\nDB_USER=dotenv_user\n")
    s = load({"NODE_ENV": "remotetest", "PORT": "6000"}, tmp_path)
    assert s.port == 6000  # the environment wins
    assert s.db_name == "from_file"  # the mode file wins over .env
    assert s.db_user == "dotenv_user"
    assert s.jwt_secret == STRONG


def test_local_mode_allows_auth_off_and_gives_the_vite_dev_origins(tmp_path: Path) -> None:
    s = load({"AUTH_REQUIRED": "false"}, tmp_path)
    assert s.auth_required is False
    assert "http://localhost:5173" in s.cors_origins


def test_audit_redacts_every_secret(tmp_path: Path) -> None:
    s = load(
        {
            **REMOTE,
            "DB_PASSWORD": "hunter2",
            "JIRA_API_TOKEN": "jira-token",
            "REDIS_URL": "redis://:redispw@cache:6379/0",
        },
        tmp_path,
    )
    audit = s.audit()
    text = orjson.dumps(audit).decode()
    for secret in (STRONG, "hunter2", "jira-token", "redispw"):
        assert secret not in text
    assert audit["jwt_secret"] == "<redacted>"
    assert audit["jwt_secret_previous"] == "<unset>"
    assert audit["port"] == 4000


def test_settings_repr_never_shows_secrets(tmp_path: Path) -> None:
    s = load({**REMOTE, "DB_PASSWORD": "hunter2"}, tmp_path)
    assert STRONG not in repr(s)
    assert "hunter2" not in repr(s)


def test_config_audit_command_prints_redacted_json(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", **REMOTE, "DB_PASSWORD": "hunter2"}
    out = subprocess.run(
        [sys.executable, "-m", "ccsm_core", "config", "audit"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    audit = orjson.loads(out)
    assert audit["node_env"] == "remote"
    assert audit["db_password"] == "<redacted>"
    assert "hunter2" not in out


def test_a_service_refuses_to_start_with_one_clear_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "NODE_ENV": "remote", "AUTH_REQUIRED": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "ccsm_api"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "AUTH_REQUIRED" in lines[0]


README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_START = "<!-- settings table: generated by `python -m ccsm_core config docs`"
TABLE_END = "<!-- end of settings table -->"


def test_readme_environment_table_is_generated_from_the_settings() -> None:
    text = README.read_text(encoding="utf-8")
    block = text[text.index(TABLE_START) : text.index(TABLE_END)]
    table = block.split("\n", 1)[1]
    assert table == env_table_markdown(), "README drifted: paste `python -m ccsm_core config docs` between the markers"


def test_every_variable_is_documented_once() -> None:
    names = [var.name for var in env_vars()]
    assert len(names) == len(set(names))
    assert all(var.doc and var.kind.format for var in env_vars())


def test_to_env_reads_back_to_the_same_settings(tmp_path: Path) -> None:
    original = load(
        {
            **REMOTE,
            "DB_PASSWORD": " spaced pass ",
            "DB_CONNECT_TIMEOUT_MS": "1500",
            "CORS_ORIGINS": "https://a.example.com,https://b.example.com",
            "TRUSTED_PROXIES": "10.0.0.0/24",
            "USE_HELMET": "yes",
            "JWT_EXPIRES_IN": "2 days",
        },
        tmp_path,
    )
    again = load(original.to_env(), tmp_path)
    assert again == original
    assert again.db_password == " spaced pass "
    assert again.jwt_expires_seconds == 172800


def test_secrets_are_the_secret_variables() -> None:
    assert {var.name for var in env_vars() if var.secret} == {
        "DB_PASSWORD",
        "JWT_SECRET",
        "JWT_SECRET_PREVIOUS",
        "JIRA_API_TOKEN",
    }
