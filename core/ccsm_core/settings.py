"""The environment contract, read once into a frozen, typed `Settings`.

The variable names, meanings and defaults are the runbook's (../shared/runbook/deploy-backend.md §4) and the
old backend's (contract-core §8.1), plus what the new design needs (REDIS_URL, CORS_ORIGINS, TRUSTED_PROXIES,
LOG_LEVEL, ...). Invalid or unsafe configuration raises `ConfigError` whose message is one line naming the
variable; the process entry points print it and exit 2 before anything connects.

Every field that comes from the environment says so once, where it is declared (`setting(...)`): its variable,
how its value is written, what it means and how it reads. `load_settings` reads by that metadata, `to_env` writes
it back (test and bench subprocesses), and the README's environment table (`python -m ccsm_core config docs`) is
generated from it, so none of them can drift from the others (tests/core/test_settings.py checks the README).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MODES = ("local", "remotetest", "remote")
TRUTHY = frozenset({"1", "true", "yes", "on"})  # contract-core §8.1: the old backend's truthy set
FALSY = frozenset({"0", "false", "no", "off"})

DEFAULT_JWT_EXPIRES_IN = "8h"
MIN_SECRET_BYTES = 32  # fix 2 in the spec README: a strong secret outside `local`
AUTHCODE_MAX_LENGTH = 32  # users.authcode is VARCHAR(32)
LOCAL_DEV_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:5173")  # Vite's default dev-server port


class ConfigError(ValueError):
    """Configuration that must stop the process at start-up; the message names the variable."""


# --- how one variable is written ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """How a variable's text becomes a value (`parse`, given the variable's name for the error message) and
    back (`dump`), and how the value is described to whoever sets it (`format`)."""

    format: str
    parse: Callable[[str, str], Any]
    dump: Callable[[Any], str] = str
    strip: bool = True  # a password may legitimately start or end with a space


def _text(name: str, raw: str) -> str:
    return raw


def _lower(name: str, raw: str) -> str:
    return raw.lower()


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw, 10)
    except ValueError:
        raise ConfigError(f"{name} must be an integer (got {raw!r})") from None


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number (got {raw!r})") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number (got {raw!r})")
    return value


def _ms_as_seconds(name: str, raw: str) -> float:
    return _number(name, raw) / 1000


def _flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in TRUTHY:
        return True
    if value in FALSY:
        return False
    raise ConfigError(f"{name} must be one of 1/true/yes/on or 0/false/no/off (got {raw!r})")


def _items(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _bcrypt_rounds(name: str, raw: str) -> int:
    # contract-core §8.3: below 8 -> 8, above 15 -> 15, otherwise rounded down
    return int(min(15, max(8, math.floor(_number(name, raw)))))


def _duration(name: str, raw: str) -> str:
    try:
        parse_duration_seconds(raw)
    except ValueError:
        raise ConfigError(f"{name} must look like 8h, 30m, 7d, '2 days' or a number of seconds (got {raw!r})") from None
    return raw


TEXT = Kind("text", _text)
LOWER = Kind("text (case-insensitive)", _lower)
INTEGER = Kind("integer", _integer)
PORT = Kind("TCP port (0..65535)", _integer)
BYTES = Kind("integer (bytes)", _integer)
MILLISECONDS = Kind("integer (milliseconds)", _integer)
MS_AS_SECONDS = Kind("integer (milliseconds)", _ms_as_seconds, dump=lambda v: str(round(v * 1000)))
FLAG = Kind("`true`/`false` (also 1/0, yes/no, on/off)", _flag, dump=lambda v: "true" if v else "false")
LIST = Kind("comma-separated list", _items, dump=",".join)
CIDRS = Kind("comma-separated IP addresses or CIDR ranges", _items, dump=",".join)
ORIGINS = Kind("comma-separated origins (scheme://host[:port])", _items, dump=",".join)
SECRET = Kind("secret text (from the secret store)", _text)
PASSWORD = Kind("secret text (from the secret store; not trimmed)", _text, strip=False)
ROUNDS = Kind("integer 8..15 (clamped)", _bcrypt_rounds)
DURATION = Kind("duration: 8h, 30m, 7d, '2 days', or seconds", _duration)
URL = Kind("URL", _text)


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One variable of the environment contract, as declared on its `Settings` field."""

    name: str
    kind: Kind
    doc: str
    default_doc: str | None = None  # how the default reads in the docs, when it is not simply the value
    secret: bool = False  # never logged, never in `config audit`
    by_mode: Callable[[str], Any] | None = None  # the default when it depends on NODE_ENV
    field: str = ""  # the Settings field, filled in by env_vars()


def setting(
    default: Any,
    env: str,
    kind: Kind,
    doc: str,
    *,
    default_doc: str | None = None,
    secret: bool = False,
    by_mode: Callable[[str], Any] | None = None,
) -> Any:
    """A `Settings` field read from the environment variable `env`."""
    var = EnvVar(env, kind, doc, default_doc, secret, by_mode)
    return field(default=default, repr=not secret, metadata={"env": var})


def _cors_default(mode: str) -> tuple[str, ...]:
    return LOCAL_DEV_ORIGINS if mode == "local" else ()


def _authcode_min_default(mode: str) -> int:
    # Issue 12 item 1: 6 characters where the service faces the internet; none in `local`, so the contract's own
    # examples (3-digit codes) keep working there.
    return 0 if mode == "local" else 6


def _seconds(name: str, raw: str) -> int:
    try:
        return parse_duration_seconds(raw)
    except ValueError:
        raise ConfigError(f"{name} must look like 15m, 1h or a number of seconds (got {raw!r})") from None


SECONDS = Kind("duration: 15m, 1h, or seconds", _seconds)


@dataclass(frozen=True, slots=True)
class Settings:
    service: str = "backend"  # which service reads them (logs, /health); not from the environment
    node_env: str = setting("local", "NODE_ENV", TEXT, "mode: `local`, `remotetest`, `remote`")
    port: int = setting(4000, "PORT", PORT, "listen port")
    host: str = setting(
        "0.0.0.0",  # noqa: S104 - containers listen on every interface; the ALB/edge is the boundary
        "HOST",
        TEXT,
        "listen address",
    )

    db_host: str = setting("127.0.0.1", "DB_HOST", TEXT, "MySQL host")
    db_port: int = setting(3306, "DB_PORT", PORT, "MySQL port")
    db_user: str = setting("root", "DB_USER", TEXT, "MySQL user")
    db_password: str = setting("", "DB_PASSWORD", PASSWORD, "MySQL password", secret=True)
    db_name: str = setting("ccsm", "DB_NAME", TEXT, "MySQL database")
    db_pool_size: int = setting(
        10, "DB_POOL_SIZE", INTEGER, "connections per process (mysql2's `connectionLimit`, contract-core §1.5)"
    )
    db_connect_timeout_s: float = setting(
        3.0, "DB_CONNECT_TIMEOUT_MS", MS_AS_SECONDS, "bounded wait to connect; past it a request gets 503"
    )
    db_acquire_timeout_s: float = setting(
        5.0, "DB_ACQUIRE_TIMEOUT_MS", MS_AS_SECONDS, "bounded wait for a pooled connection; past it a request gets 503"
    )
    db_user_connections: int = setting(
        3,
        "DB_USER_CONNECTIONS",
        INTEGER,
        "pooled connections one user's requests may hold at once (at most `DB_POOL_SIZE` - 1; 0: no bound), more "
        "only while the pool keeps more than this many idle; the rest wait, then get 429 + `Retry-After`",
    )
    db_user_queue: int = setting(
        50,
        "DB_USER_QUEUE",
        INTEGER,
        "requests of one user that may wait for one of those connections (each at most `DB_ACQUIRE_TIMEOUT_MS`); "
        "more get 429 + `Retry-After` at once",
    )

    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "REDIS_URL", URL, "Redis (`redis://`, `rediss://` or `unix://`)"
    )
    redis_prefix: str = setting("ccsm:", "REDIS_PREFIX", TEXT, "the prefix of every Redis key and channel")

    auth_required: bool = setting(
        False, "AUTH_REQUIRED", FLAG, "must be true outside `local`", default_doc="`false` (local only)"
    )
    jwt_secret: str = setting(
        "",
        "JWT_SECRET",
        SECRET,
        "HS256 signing secret; required when auth is on, ≥ 32 bytes outside `local`",
        secret=True,
    )
    jwt_secret_previous: str = setting(
        "",
        "JWT_SECRET_PREVIOUS",
        SECRET,
        "accepted for verification only, for a rotation without logging anyone out",
        secret=True,
    )
    jwt_expires_in: str = setting(DEFAULT_JWT_EXPIRES_IN, "JWT_EXPIRES_IN", DURATION, "token lifetime")
    jwt_expires_seconds: int = 8 * 3600  # JWT_EXPIRES_IN in seconds, derived by load_settings
    bcrypt_rounds: int = setting(12, "BCRYPT_ROUNDS", ROUNDS, "bcrypt cost of new hashes")
    password_hash: str = setting(
        "bcrypt",
        "PASSWORD_HASH",
        LOWER,
        "`bcrypt`, or `argon2id` to opt in to rehash-on-login (bcrypt stays the default for rollback)",
    )
    authcode_min_length: int = setting(
        0,
        "AUTHCODE_MIN_LENGTH",
        INTEGER,
        "shortest desktop auth code `POST`/`PUT /api/users` accept for a new or changed code (0: no minimum)",
        default_doc="`6`; `0` (none) in `local`",
        by_mode=_authcode_min_default,
    )
    login_window_s: int = setting(
        900,
        "LOGIN_LIMIT_WINDOW",
        SECONDS,
        "the window of every login failure counter below (fixed, from the first failure)",
        default_doc="`15m`",
    )
    login_failures_per_account_address: int = setting(
        10,
        "LOGIN_FAILURES_PER_ACCOUNT_ADDRESS",
        INTEGER,
        "`POST /api/login`: failures per account from one client address before that address gets 429",
    )
    login_failures_per_account: int = setting(
        100,
        "LOGIN_FAILURES_PER_ACCOUNT",
        INTEGER,
        "`POST /api/login`: failures per account from all addresses; past it, addresses that failed on it get 429",
    )
    login_failures_per_address: int = setting(
        50,
        "LOGIN_FAILURES_PER_ADDRESS",
        INTEGER,
        "each login endpoint: failures per client address (any account or code) before it gets 429",
    )
    authcode_failures_global: int = setting(
        100,
        "AUTHCODE_FAILURES_GLOBAL",
        INTEGER,
        "`POST /api/desktop/login-authcode`: failures from all clients; past it, addresses that failed get 429",
    )

    use_helmet: bool = setting(False, "USE_HELMET", FLAG, "helmet 8's default security headers on every response")
    cors_origins: tuple[str, ...] = setting(
        (),
        "CORS_ORIGINS",
        ORIGINS,
        "exact CORS allow-list (also checked on the WebSocket upgrade's `Origin`)",
        default_doc="Vite's dev origins in `local`, none otherwise",
        by_mode=_cors_default,
    )
    trusted_proxies: tuple[str, ...] = setting(
        (), "TRUSTED_PROXIES", CIDRS, "peers whose `X-Forwarded-For` is believed (the ALB's subnets)"
    )
    body_limit_bytes: int = setting(
        100 * 1024, "BODY_LIMIT_BYTES", BYTES, "request body limit (express.json's 100 kB, contract-core §1.1)"
    )
    header_limit_bytes: int = setting(
        32 * 1024,
        "HEADER_LIMIT_BYTES",
        BYTES,
        "request line and headers together (and a chunked body's trailers); past it 431 and the connection closes",
    )
    header_timeout_ms: int = setting(
        10000,
        "HEADER_TIMEOUT_MS",
        MILLISECONDS,
        "time for a request's head to arrive (from the connection or a kept-alive request's first byte); "
        "past it 408 and the connection closes",
    )
    max_connections: int = setting(
        0,
        "MAX_CONNECTIONS",
        INTEGER,
        "open connections per process (HTTP and WebSocket); one beyond it is answered 503 at once and closed; "
        "0 means the service's default",
        default_doc="`0`: 2048 (auth, api), 18000 (ws-gateway, `make run`)",
    )

    ws_max_sockets_per_user: int = setting(
        10,
        "WS_MAX_SOCKETS_PER_USER",
        INTEGER,
        "open `/ws/desktop` sockets per user and gateway process; beyond it the upgrade gets 429 (a desktop retries)",
    )
    ws_max_sockets_per_address: int = setting(
        500,
        "WS_MAX_SOCKETS_PER_ADDRESS",
        INTEGER,
        "open `/ws/desktop` sockets per client address (one office NAT holds many desktops); beyond it 429",
    )
    ws_user_check_s: float = setting(
        15.0,
        "WS_USER_CHECK_MS",
        MS_AS_SECONDS,
        "how often the gateway re-reads its connected users from MySQL (one query for all): deactivated or "
        "revoked there, their sockets close with 4401",
    )

    shutdown_grace_ms: int = setting(15000, "SHUTDOWN_GRACE_MS", MILLISECONDS, "drain window after SIGTERM")
    shutdown_force_ms: int = setting(
        30000, "SHUTDOWN_FORCE_MS", MILLISECONDS, "hard limit after SIGTERM: what remains is cancelled, exit 1"
    )
    ready_timeout_ms: int = setting(2000, "READY_TIMEOUT_MS", MILLISECONDS, "how long `/ready` waits for a dependency")

    jira_base_url: str = setting("", "JIRA_BASE_URL", URL, "Jira Cloud site for `POST /api/items/jira-sync`")
    jira_email: str = setting("", "JIRA_EMAIL", TEXT, "Jira account e-mail")
    jira_api_token: str = setting("", "JIRA_API_TOKEN", SECRET, "Jira API token", secret=True)

    response_cache: bool = setting(
        True,
        "RESPONSE_CACHE",
        FLAG,
        "serve repeated GETs (and the desktop bootstrap) from memory while the data version is unchanged; `false`"
        " reads the database on every request (for when stale data is suspected)",
    )
    response_cache_max_bytes: int = setting(
        32 * 1024 * 1024, "RESPONSE_CACHE_MAX_BYTES", BYTES, "memory bound of the response cache, per process"
    )

    log_level: str = setting("info", "LOG_LEVEL", LOWER, "`debug`, `info`, `warning`, `error` or `critical`")
    access_log: bool = setting(True, "ACCESS_LOG", FLAG, "one JSON access line per request")
    metrics_namespace: str = setting(
        "CCSM/local",
        "METRICS_NAMESPACE",
        TEXT,
        "CloudWatch namespace of the metric (EMF) log lines; the ECS stack sets `CCSM/<environment>`",
    )
    metrics_interval_s: float = setting(
        60.0, "METRICS_INTERVAL_MS", MS_AS_SECONDS, "how often the metric lines are written (and once at shutdown)"
    )

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
            var: EnvVar | None = f.metadata.get("env")
            if var is not None and var.secret:
                value = "<redacted>" if value else "<unset>"
            elif f.name == "redis_url":
                value = redact_url(str(value))
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_env(self) -> dict[str, str]:
        """The environment that makes `load_settings` read these settings back (for subprocesses: tests,
        benchmarks). Holds the secrets: pass it to a process, never print it."""
        return {var.name: var.kind.dump(getattr(self, var.field)) for var in env_vars()}


def env_vars() -> list[EnvVar]:
    """Every variable of the environment contract, in declaration order."""
    out = []
    for f in fields(Settings):
        var: EnvVar | None = f.metadata.get("env")
        if var is not None:
            out.append(EnvVar(var.name, var.kind, var.doc, var.default_doc, var.secret, var.by_mode, f.name))
    return out


SECRET_FIELDS = frozenset(var.field for var in env_vars() if var.secret)


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
    if not 0 <= s.authcode_min_length <= AUTHCODE_MAX_LENGTH:
        raise ConfigError(f"AUTHCODE_MIN_LENGTH must be within 0..{AUTHCODE_MAX_LENGTH} (the column's width)")
    if s.login_window_s < 1:
        raise ConfigError("LOGIN_LIMIT_WINDOW must be at least one second")
    for name in (
        "login_failures_per_account_address",
        "login_failures_per_account",
        "login_failures_per_address",
        "authcode_failures_global",
    ):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name.upper()} must be at least 1")
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
    if s.response_cache_max_bytes < 0:
        raise ConfigError("RESPONSE_CACHE_MAX_BYTES must not be negative")
    if s.db_user_connections < 0 or s.db_user_queue < 0:
        raise ConfigError("DB_USER_CONNECTIONS and DB_USER_QUEUE must not be negative")
    if s.ws_max_sockets_per_user < 1 or s.ws_max_sockets_per_address < 1:
        raise ConfigError("WS_MAX_SOCKETS_PER_USER and WS_MAX_SOCKETS_PER_ADDRESS must be at least 1")
    if s.ws_user_check_s < 1:
        raise ConfigError("WS_USER_CHECK_MS must be at least 1000")
    if s.body_limit_bytes < 1:
        raise ConfigError("BODY_LIMIT_BYTES must be at least 1")
    if s.metrics_interval_s < 0.1:
        raise ConfigError("METRICS_INTERVAL_MS must be at least 100")
    if not 1024 <= s.header_limit_bytes <= 1024 * 1024:
        raise ConfigError("HEADER_LIMIT_BYTES must be within 1024..1048576")
    if not 100 <= s.header_timeout_ms <= 600_000:
        raise ConfigError("HEADER_TIMEOUT_MS must be within 100..600000")
    if s.max_connections < 0:
        raise ConfigError("MAX_CONNECTIONS must be 0 (the service's default) or more")
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


# --- reading -------------------------------------------------------------------------------------------------


def load_settings(
    service: str,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Read the environment (and `.env.<mode>`, `.env`) once into Settings; raises ConfigError."""
    env = merged_environment(os.environ if environ is None else environ, cwd or Path.cwd())
    node_env = (env.get("NODE_ENV") or "").strip() or "local"
    defaults = {f.name: f.default for f in fields(Settings)}
    values: dict[str, Any] = {"service": service}
    for var in env_vars():
        raw = env.get(var.name)
        if raw is not None and var.kind.strip:
            raw = raw.strip()
        if raw is None or raw.strip() == "":
            # fix 9: an empty value falls back to the default, like an unset one
            values[var.field] = var.by_mode(node_env) if var.by_mode is not None else defaults[var.field]
        else:
            values[var.field] = var.kind.parse(var.name, raw)
    values["jwt_expires_seconds"] = parse_duration_seconds(values["jwt_expires_in"])
    return Settings(**values)


# --- the generated documentation ------------------------------------------------------------------------------


def _default_doc(var: EnvVar) -> str:
    if var.default_doc is not None:
        return var.default_doc
    default = next(f.default for f in fields(Settings) if f.name == var.field)
    text = var.kind.dump(default)
    return f"`{text}`" if text else "—"


def env_table_markdown() -> str:
    """The README's environment table (`python -m ccsm_core config docs`)."""
    lines = ["| variable | default | format | meaning |", "|---|---|---|---|"]
    for var in env_vars():
        lines.append(f"| `{var.name}` | {_default_doc(var)} | {var.kind.format} | {var.doc} |")
    return "\n".join(lines) + "\n"


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:<redacted>@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
