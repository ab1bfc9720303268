"""Brute-force defence for both login endpoints (fix 4): counters per account and per client IP, in Redis.

Each attempt *reserves* a slot in its counters before the credential is checked (one atomic Lua call: INCR, and
set the window's expiry on the first hit), and is refused with 429 + `Retry-After` when a counter is past its
limit. A success gives its slots back (DECR), so the counters hold failures plus attempts in flight. Reserving
first is what makes the limit hold against parallel guessing: a burst of 1000 concurrent guesses gets `limit`
answers, not 1000, and it holds across every auth task because the counters are shared. The windows are fixed
(they start at the first failure), so a patient attacker gets at most `limit` guesses per window per account,
and per IP.

The account key is the user's id when the name matched a row (the lookup follows the column's case- and
accent-insensitive collation, so `ADMIN`, `Admin ` and `ädmin` share one counter), otherwise the submitted name,
case-folded: unknown names are limited exactly like real ones, so a 429 does not reveal which names exist.

Redis down: **fail open to per-process counters.** Refusing every login while Redis is unreachable would turn a
cache outage into a total outage of sign-in (and of the desktop, which needs a token to sync), while dropping the
limit altogether would leave the endpoints unprotected exactly when nobody is watching. The in-process counters
keep the same limits per task (an attacker gains at most a factor of the task count). After a Redis failure the
limiter stays on the local counters for `retry_after_s` before trying Redis again, so a dead Redis costs one
bounded time-out, not one per login; the switch is logged both ways.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import unicodedata
from dataclasses import dataclass, field

from ccsm_core.errors import ApiError
from ccsm_core.keyspace import Keyspace

log = logging.getLogger("ccsm.auth.limits")

TOO_MANY = "Too many login attempts, please try again later"

# KEYS: the counters; ARGV[1]: the window in ms. Returns {count, pttl} per key.
_RESERVE_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[#out + 1] = n
  out[#out + 1] = ttl
end
return out
"""

# Give a slot back, but never resurrect a counter whose window has ended.
_REFUND_LUA = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('DECR', key) end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Limit:
    max_failures: int
    window_s: float


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Defaults: 10 failures per account and 50 per IP (an office behind one NAT) in 15 minutes."""

    account: Limit = Limit(10, 900.0)
    ip: Limit = Limit(50, 900.0)
    redis_timeout_s: float = 0.5
    retry_after_s: float = 5.0


class RateLimited(ApiError):
    def __init__(self, retry_after_s: float, scope: str) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(429, TOO_MANY, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds
        self.scope = scope  # "ip" or "account", for the audit log


def fold_name(name: str) -> str:
    """An approximation of utf8mb4_unicode_ci equality for names that matched no row: case and accents fold."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).rstrip(" ")


def _digest(value: str) -> str:
    # Keys never hold a login name or an auth code in clear (Redis is not a place for credentials).
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class Slot:
    key: str
    backend: str  # "redis" or "local": a refund goes back where the reservation was made


@dataclass
class _LocalCounters:
    entries: dict[str, tuple[float, int]] = field(default_factory=dict)

    def reserve(self, key: str, window_s: float, now: float) -> tuple[int, float]:
        expires, count = self.entries.get(key, (0.0, 0))
        if expires <= now:
            expires, count = now + window_s, 0
        count += 1
        self.entries[key] = (expires, count)
        if len(self.entries) > 100_000:  # drop ended windows; a flood of names cannot grow this for ever
            self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
        return count, expires - now

    def refund(self, key: str, now: float) -> None:
        hit = self.entries.get(key)
        if hit is not None and hit[0] > now and hit[1] > 0:
            self.entries[key] = (hit[0], hit[1] - 1)


class LoginLimiter:
    def __init__(self, keyspace: Keyspace, limits: LoginLimits | None = None) -> None:
        self.keyspace = keyspace
        self.limits = limits or LoginLimits()
        self.local = _LocalCounters()
        self._redis_retry_at = 0.0
        self._reserve = keyspace.client.register_script(_RESERVE_LUA)
        self._refund = keyspace.client.register_script(_REFUND_LUA)

    def ip_key(self, endpoint: str, ip: str) -> str:
        return self.keyspace.key("auth", "limit", endpoint, "ip", _digest(ip))

    def account_key(self, endpoint: str, account: str) -> str:
        return self.keyspace.key("auth", "limit", endpoint, "account", _digest(account))

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._redis_retry_at

    def _redis_failed(self, exc: BaseException) -> None:
        if not self.degraded:
            log.warning(
                "rate-limit counters unavailable in Redis; using per-process counters",
                extra={"event": "auth.limits.degraded", "error": type(exc).__name__},
            )
        self._redis_retry_at = time.monotonic() + self.limits.retry_after_s

    async def reserve(self, key: str, limit: Limit, scope: str) -> Slot:
        """Count one attempt against `key`; raises RateLimited (429) when it is over the limit."""
        window_ms = max(1, int(limit.window_s * 1000))
        if not self.degraded:
            try:
                count, ttl_ms = await asyncio.wait_for(
                    self._reserve(keys=[key], args=[window_ms]), self.limits.redis_timeout_s
                )
            except Exception as exc:
                self._redis_failed(exc)
            else:
                if self._redis_retry_at:
                    self._redis_retry_at = 0.0
                    log.info("rate-limit counters back in Redis", extra={"event": "auth.limits.restored"})
                if int(count) > limit.max_failures:
                    raise RateLimited(int(ttl_ms) / 1000, scope)
                return Slot(key, "redis")
        count, remaining = self.local.reserve(key, limit.window_s, time.monotonic())
        if count > limit.max_failures:
            raise RateLimited(remaining, scope)
        return Slot(key, "local")

    async def refund(self, slots: list[Slot]) -> None:
        """Give back the slots of an attempt that did not fail (a success, or an error on our side)."""
        remote = [s.key for s in slots if s.backend == "redis"]
        for slot in slots:
            if slot.backend == "local":
                self.local.refund(slot.key, time.monotonic())
        if remote:
            try:
                await asyncio.wait_for(self._refund(keys=remote), self.limits.redis_timeout_s)
            except Exception as exc:  # the slot stays counted until its window ends: the safe side
                self._redis_failed(exc)
