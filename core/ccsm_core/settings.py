"""The environment contract, read once into a frozen, typed `Settings`.

The variable names, meanings and defaults are the runbook's (../shared/runbook/deploy-backend.md §4) and the
old backend's (contract-core §8.1), plus what the new design needs (REDIS_URL, CORS_ORIGINS, TRUSTED_PROXIES,
LOG_LEVEL, ...). Invalid or unsafe configuration raises `ConfigError` whose message is one line naming the
variable; the process entry points print it and exit 2 before anything connects.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MODES = ("local", "remotetest", "remote")
TRUTHY = frozenset({"1", "true", "yes", "on"})  # contract-core §8.1: the old backend's truthy set
FALSY = frozenset({"0", "false", "no", "off"})

# Names whose values never appear in logs or in `config audit`.
SECRET_FIELDS = frozenset({"db_password", "jwt_secret", "jwt_secret_previous", "jira_api_token"})

DEFAULT_JWT_EXPIRES_IN = "8h"
MIN_SECRET_BYTES = 32  # fix 2 in the spec README: a strong secret outside `local`


class ConfigError(ValueError):
    """Configuration that must stop the process at start-up; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    service: str = "backend"
    node_env: str = "local"
    port: int = 4000
    host: str = "0.0.0.0"  # noqa: S104 - containers listen on every interface; the ALB/edge is the boundary

    db_host: str = "127.0.0.1"
    db_port: int = 3306
    db_user: str = "root"
    db_password: str = field(default="", repr=False)
    db_name: str = "ccsm"
    db_pool_size: int = 10  # contract-core §1.5: mysql2 connectionLimit 10
    db_connect_timeout_s: float = 3.0
    db_acquire_timeout_s: float = 5.0

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "ccsm:"

    auth_required: bool = False
    jwt_secret: str = field(default="", repr=False)
    jwt_secret_previous: str = field(default="", repr=False)
    jwt_expires_in: str = DEFAULT_JWT_EXPIRES_IN
    jwt_expires_seconds: int = 8 * 3600
    bcrypt_rounds: int = 12
    password_hash: str = "bcrypt"  # noqa: S105 - the name of a hashing scheme, not a secret

    use_helmet: bool = False
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    body_limit_bytes: int = 100 * 1024  # express.json() default limit, contract-core §1.1

    shutdown_grace_ms: int = 15000
    shutdown_force_ms: int = 30000
    ready_timeout_ms: int = 2000

    jira_base_url: str = ""
    jira_email: str = ""
    jira_api_token: str = field(default="", repr=False)

    log_level: str = "info"
    access_log: bool = True

    def __post_init__(self) -> None:
        validate(self)

    @property
    def is_local(self) -> bool:
        return self.node_env == "local"

    @property
    def tokens_enabled(self) -> bool:
        """Tokens are issued whenever a secret exists (contract-core §8.10) and always when auth is on."""
        return bool(self.jwt_secret)

    def audit(self) -> dict[str, object]:
        """The effective configuration with every secret redacted (runbook §13, 'final env configuration audit')."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                value = "<redacted>" if value else "<unset>"
            elif f.name == "redis_url":
                value = redact_url(str(value))
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def validate(s: Settings) -> None:
    if s.node_env not in MODES:
        raise ConfigError(f"NODE_ENV must be one of {', '.join(MODES)} (got {s.node_env!r})")
    if not s.is_local and not s.auth_required:
        raise ConfigError("AUTH_REQUIRED must be true when NODE_ENV is not 'local' (fix 2 of the spec)")
    if s.auth_required and not s.jwt_secret:
        raise ConfigError("JWT_SECRET is required when AUTH_REQUIRED is true")
    if not s.is_local:
        if len(s.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes when NODE_ENV={s.node_env}")
        if s.jwt_secret_previous and len(s.jwt_secret_previous.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"JWT_SECRET_PREVIOUS must be at least {MIN_SECRET_BYTES} bytes when set")
    if s.jwt_secret_previous and s.jwt_secret_previous == s.jwt_secret:
        raise ConfigError("JWT_SECRET_PREVIOUS must differ from JWT_SECRET")
    if not 8 <= s.bcrypt_rounds <= 15:
        raise ConfigError("BCRYPT_ROUNDS must be within 8..15")
    if s.password_hash not in ("bcrypt", "argon2id"):
        raise ConfigError("PASSWORD_HASH must be 'bcrypt' or 'argon2id'")
    for name in ("port", "db_port"):
        value = getattr(s, name)
        if not 0 <= value <= 65535:
            raise ConfigError(f"{name.upper()} must be a TCP port (0..65535), got {value}")
    if s.shutdown_grace_ms < 0 or s.shutdown_force_ms <= 0:
        raise ConfigError("SHUTDOWN_GRACE_MS and SHUTDOWN_FORCE_MS must be positive")
    if s.shutdown_force_ms < s.shutdown_grace_ms:
        raise ConfigError("SHUTDOWN_FORCE_MS must not be shorter than SHUTDOWN_GRACE_MS")
    if s.jwt_expires_seconds <= 0:
        raise ConfigError("JWT_EXPIRES_IN must be a positive duration")
    if s.db_pool_size < 1:
        raise ConfigError("DB_POOL_SIZE must be at least 1")
    if s.body_limit_bytes < 1:
        raise ConfigError("BODY_LIMIT_BYTES must be at least 1")
    if s.log_level not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError("LOG_LEVEL must be one of debug, info, warning, error, critical")
    for origin in s.cors_origins:
        if origin in ("*", "null") or not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"CORS_ORIGINS entries must be exact origins (https://host[:port]), got {origin!r}")
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES entries must be IP addresses or CIDR ranges (got {proxy!r})") from None
    if not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")


# --- parsing -------------------------------------------------------------------------------------------------

_MS_UNITS = {  # vercel/ms units, in seconds (contract-core §8.2)
    "ms": 0.001,
    "msec": 0.001,
    "msecs": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
    "y": 31557600,
    "yr": 31557600,
    "yrs": 31557600,
    "year": 31557600,
    "years": 31557600,
}
_MS_RE = re.compile(r"^(-?(?:\d+)?\.?\d+) *([a-z]+)?$", re.IGNORECASE)


def parse_duration_seconds(text: str) -> int:
    """`8h`, `30m`, `7d`, `2 days` as vercel/ms reads them; a bare number means seconds (fix 9)."""
    match = _MS_RE.match(text.strip())
    if not match:
        raise ValueError(text)
    amount = float(match.group(1))
    unit = (match.group(2) or "s").lower()
    if unit not in _MS_UNITS:
        raise ValueError(text)
    return math.floor(amount * _MS_UNITS[unit])


def _env_files(mode: str, cwd: Path) -> list[Path]:
    # contract-core §8.1: the mode file first, then `.env`; neither overrides what is already set.
    return [cwd / f".env.{mode}", cwd / ".env"]


def read_env_file(path: Path) -> dict[str, str]:
    """A small dotenv reader: KEY=VALUE lines, `#` comments, optional quotes, optional `export`."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def merged_environment(environ: Mapping[str, str], cwd: Path) -> dict[str, str]:
    mode = (environ.get("NODE_ENV") or "local").strip()
    merged: dict[str, str] = {}
    for path in _env_files(mode, cwd):
        if path.is_file():
            for key, value in read_env_file(path).items():
                merged.setdefault(key, value)
    merged.update(environ)  # real environment variables always win
    return merged


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name)
        # fix 9: an empty value falls back to the default, like an unset one
        return default if value is None or value.strip() == "" else value.strip()

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name, str(default))
        try:
            return int(raw, 10)
        except ValueError:
            raise ConfigError(f"{name} must be an integer (got {raw!r})") from None

    def number(self, name: str, default: float) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number (got {raw!r})") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number (got {raw!r})")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        value = raw.strip().lower()
        if value in TRUTHY:
            return True
        if value in FALSY:
            return False
        raise ConfigError(f"{name} must be one of 1/true/yes/on or 0/false/no/off (got {raw!r})")

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name) or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())


LOCAL_DEV_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:5173")  # Vite's default dev-server port


def load_settings(
    service: str,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Read the environment (and `.env.<mode>`, `.env`) once into Settings; raises ConfigError."""
    env = merged_environment(os.environ if environ is None else environ, cwd or Path.cwd())
    r = _Reader(env)
    node_env = r.text("NODE_ENV", "local")

    expires_raw = r.text("JWT_EXPIRES_IN", DEFAULT_JWT_EXPIRES_IN)
    try:
        expires_seconds = parse_duration_seconds(expires_raw)
    except ValueError:
        raise ConfigError(
            f"JWT_EXPIRES_IN must look like 8h, 30m, 7d, '2 days' or a number of seconds (got {expires_raw!r})"
        ) from None

    rounds = r.number("BCRYPT_ROUNDS", 12)
    # contract-core §8.3: below 8 -> 8, above 15 -> 15, otherwise rounded down
    bcrypt_rounds = int(min(15, max(8, math.floor(rounds))))

    cors = r.items("CORS_ORIGINS")
    if not cors and "CORS_ORIGINS" not in env and node_env == "local":
        cors = LOCAL_DEV_ORIGINS

    return Settings(
        service=service,
        node_env=node_env,
        port=r.integer("PORT", 4000),
        host=r.text("HOST", "0.0.0.0"),  # noqa: S104 - see Settings.host
        db_host=r.text("DB_HOST", "127.0.0.1"),
        db_port=r.integer("DB_PORT", 3306),
        db_user=r.text("DB_USER", "root"),
        db_password=env.get("DB_PASSWORD", ""),  # a password may legitimately contain spaces
        db_name=r.text("DB_NAME", "ccsm"),
        db_pool_size=r.integer("DB_POOL_SIZE", 10),
        db_connect_timeout_s=r.number("DB_CONNECT_TIMEOUT_MS", 3000) / 1000,
        db_acquire_timeout_s=r.number("DB_ACQUIRE_TIMEOUT_MS", 5000) / 1000,
        redis_url=r.text("REDIS_URL", "redis://127.0.0.1:6379/0"),
        redis_prefix=r.text("REDIS_PREFIX", "ccsm:"),
        auth_required=r.flag("AUTH_REQUIRED", False),
        jwt_secret=r.text("JWT_SECRET", ""),  # the old backend trims the secret (contract-core §8.2)
        jwt_secret_previous=r.text("JWT_SECRET_PREVIOUS", ""),
        jwt_expires_in=expires_raw,
        jwt_expires_seconds=expires_seconds,
        bcrypt_rounds=bcrypt_rounds,
        password_hash=r.text("PASSWORD_HASH", "bcrypt").lower(),
        use_helmet=r.flag("USE_HELMET", False),
        cors_origins=cors,
        trusted_proxies=r.items("TRUSTED_PROXIES"),
        body_limit_bytes=r.integer("BODY_LIMIT_BYTES", 100 * 1024),
        shutdown_grace_ms=r.integer("SHUTDOWN_GRACE_MS", 15000),
        shutdown_force_ms=r.integer("SHUTDOWN_FORCE_MS", 30000),
        ready_timeout_ms=r.integer("READY_TIMEOUT_MS", 2000),
        jira_base_url=r.text("JIRA_BASE_URL", ""),
        jira_email=r.text("JIRA_EMAIL", ""),
        jira_api_token=r.text("JIRA_API_TOKEN", ""),
        log_level=r.text("LOG_LEVEL", "info").lower(),
        access_log=r.flag("ACCESS_LOG", True),
    )


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:<redacted>@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
