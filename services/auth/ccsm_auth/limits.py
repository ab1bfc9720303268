"""Brute-force defence for both login endpoints (fix 4, issue 12 items 1, 3 and 10): failure counters in Redis.

Counters, each over the fixed window `LOGIN_LIMIT_WINDOW` (15 minutes, from its first failure):
- per client address, per endpoint (`LOGIN_FAILURES_PER_ADDRESS`, 50: an office behind one NAT): past it, 429.
- web login, per (account, address) (`LOGIN_FAILURES_PER_ACCOUNT_ADDRESS`, 10): past it, 429 for that address
  only. Failing from one address no longer locks the account for everyone (item 3): the right password from an
  address that has not failed still gets in.
- web login, per account across all addresses (`LOGIN_FAILURES_PER_ACCOUNT`, 100), and the auth-code login across
  all clients (`AUTHCODE_FAILURES_GLOBAL`, 100; item 1): **budgets**. While one is spent, an address that failed
  recently (its own counter holds a failure) gets 429; an address without recent failures is still evaluated, once
  per window, so the operator who types the right code, or the admin at their usual desk, gets in during an
  attack, and an attacker gets at most the budget plus one guess per fresh address per window. Distributed
  guessing of a 3-digit code space goes from 1,000 guesses in seconds to the budget's worth per window.

Each attempt *reserves* its slots before the credential is checked (atomic Lua: INCR, and set the window's expiry
on the first hit) and is refused when a counter is past its limit. A success gives its slots back (DECR), so the
counters hold failures plus attempts in flight. Reserving first is what makes a limit hold against parallel
guessing (a burst of 1,000 concurrent guesses gets `limit` answers, not 1,000), and it holds across every auth
task because the counters are shared.

Account keys (item 10) come from the submitted name alone, never from whether a row matched it: the name's
weight string in the `users.login` column's own collation (`login.select_login_weight`), trailing pad spaces
dropped. Every spelling the database treats as the same login (`ADMIN`, `admin `, `ädmin`, `admin` + U+200B,
which the collation ignores) shares one counter, and an unknown name behaves exactly like a known one, so a
429 says nothing about which names exist. Addresses: IPv4 as is, IPv6 by its /64 (one host usually holds a whole
/64, RFC 4291 §2.5.4 / RFC 6177), so rotating through a prefix does not multiply the per-address budget.

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
import ipaddress
import itertools
import logging
import math
import time
from dataclasses import dataclass, field

from ccsm_core.errors import ApiError
from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.auth.limits")

TOO_MANY = "Too many login attempts, please try again later"
IPV6_PREFIX = 64

# KEYS[1]: the counter; ARGV[1]: the window in ms. Returns {count, pttl}.
_RESERVE_LUA = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# A budget: the same reservation, unless the budget is spent. ARGV[2]: the budget; ARGV[3]: '1' when the caller
# has no recent failure (evaluated even while the budget is spent). Returns {count, pttl}; count -1: refused.
_BUDGET_LUA = (
    """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2])
if spent and ARGV[3] ~= '1' then
  return {-1, redis.call('PTTL', KEYS[1])}
end
"""
    + _RESERVE_LUA
)

# Give slots back, but never resurrect a counter whose window has ended.
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


DEFAULT_WINDOW_S = 900.0


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """The counters' limits; `from_settings` reads them from the environment (the defaults are the same)."""

    account_address: Limit = Limit(10, DEFAULT_WINDOW_S)
    account: Limit = Limit(100, DEFAULT_WINDOW_S)
    ip: Limit = Limit(50, DEFAULT_WINDOW_S)
    authcode_global: Limit = Limit(100, DEFAULT_WINDOW_S)
    redis_timeout_s: float = 0.5
    retry_after_s: float = 5.0

    @classmethod
    def from_settings(cls, s: Settings) -> LoginLimits:
        window = float(s.login_window_s)
        return cls(
            account_address=Limit(s.login_failures_per_account_address, window),
            account=Limit(s.login_failures_per_account, window),
            ip=Limit(s.login_failures_per_address, window),
            authcode_global=Limit(s.authcode_failures_global, window),
        )


class RateLimited(ApiError):
    def __init__(self, retry_after_s: float, scope: str) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(429, TOO_MANY, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds
        self.scope = scope  # "ip", "account" or "global", for the audit log


def _digest(value: str) -> str:
    # Keys never hold a login name or an auth code in clear (Redis is not a place for credentials).
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def address_ref(ip: str) -> str:
    """What the per-address counters count: the address, or an IPv6 address's /64 network."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, IPV6_PREFIX), strict=False))
    return str(addr)


@dataclass
class Slot:
    key: str
    backend: str  # "redis" or "local": a refund goes back where the reservation was made
    count: int = 1  # the counter after this reservation: failures and attempts in flight, this one included
    ttl_s: float = 0.0  # what remains of the counter's window

    @property
    def failed_recently(self) -> bool:
        """Whether the counter held anything besides this attempt: a failure (or an attempt in flight)."""
        return self.count > 1


# The per-process fallback's size: plenty for the failures of one task's clients during a Redis outage, and
# small enough that its memory (~10 MB) cannot become the attack.
LOCAL_MAX_ENTRIES = 100_000


@dataclass
class _LocalCounters:
    entries: dict[str, tuple[float, int]] = field(default_factory=dict)

    def count(self, key: str, now: float) -> int:
        expires, count = self.entries.get(key, (0.0, 0))
        return count if expires > now else 0

    def remaining(self, key: str, now: float) -> float:
        return max(0.0, self.entries.get(key, (0.0, 0))[0] - now)

    def reserve(self, key: str, window_s: float, now: float) -> tuple[int, float]:
        expires, count = self.entries.get(key, (0.0, 0))
        if expires <= now:
            expires, count = now + window_s, 0
        count += 1
        self.entries[key] = (expires, count)
        if len(self.entries) > LOCAL_MAX_ENTRIES:
            self._prune(now)
        return count, expires - now

    def _prune(self, now: float) -> None:
        """Drop ended windows; when a flood of distinct keys keeps the table full of live ones, also forget the
        oldest, down to three quarters of the cap. Either way the next prune is at least a quarter of the cap
        away, so a flood costs a constant amount per login rather than a scan of the whole table each time."""
        live = {k: v for k, v in self.entries.items() if v[0] > now}
        keep = LOCAL_MAX_ENTRIES * 3 // 4
        if len(live) > keep:
            for k in list(itertools.islice(live, len(live) - keep)):  # dicts keep insertion order: oldest first
                del live[k]
        self.entries = live

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
        self._budget = keyspace.client.register_script(_BUDGET_LUA)
        self._refund = keyspace.client.register_script(_REFUND_LUA)

    # --- keys ----------------------------------------------------------------------------------------------------

    def ip_key(self, endpoint: str, ip: str) -> str:
        return self.keyspace.key("auth", "limit", endpoint, "ip", _digest(address_ref(ip)))

    def account_key(self, endpoint: str, account: str) -> str:
        return self.keyspace.key("auth", "limit", endpoint, "account", _digest(account))

    def account_address_key(self, endpoint: str, account: str, ip: str) -> str:
        pair = f"{account}\x00{address_ref(ip)}"
        return self.keyspace.key("auth", "limit", endpoint, "account-ip", _digest(pair))

    def global_key(self, endpoint: str) -> str:
        return self.keyspace.key("auth", "limit", endpoint, "global")

    # --- Redis, or the local counters while it is down ----------------------------------------------------------

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

    def _redis_answered(self) -> None:
        if self._redis_retry_at:
            self._redis_retry_at = 0.0
            log.info("rate-limit counters back in Redis", extra={"event": "auth.limits.restored"})

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
                self._redis_answered()
                if int(count) > limit.max_failures:
                    raise RateLimited(int(ttl_ms) / 1000, scope)
                return Slot(key, "redis", int(count), int(ttl_ms) / 1000)
        count, remaining = self.local.reserve(key, limit.window_s, time.monotonic())
        if count > limit.max_failures:
            raise RateLimited(remaining, scope)
        return Slot(key, "local", count, remaining)

    async def reserve_budget(self, key: str, limit: Limit, scope: str, caller: Slot) -> Slot:
        """Count one attempt against the budget `key`. While the budget is spent, a caller whose own counter
        (`caller`, reserved just before) shows a recent failure gets 429; one without is evaluated and counted."""
        window_ms = max(1, int(limit.window_s * 1000))
        exempt = not caller.failed_recently
        if not self.degraded:
            try:
                count, ttl_ms = await asyncio.wait_for(
                    self._budget(keys=[key], args=[window_ms, limit.max_failures, "1" if exempt else "0"]),
                    self.limits.redis_timeout_s,
                )
            except Exception as exc:
                self._redis_failed(exc)
            else:
                self._redis_answered()
                if int(count) < 0:
                    # The refusal lasts while both hold: the budget is spent and the caller's failures are recent.
                    raise RateLimited(min(int(ttl_ms) / 1000, caller.ttl_s), scope)
                return Slot(key, "redis", int(count), int(ttl_ms) / 1000)
        now = time.monotonic()
        if not exempt and self.local.count(key, now) >= limit.max_failures:
            raise RateLimited(min(self.local.remaining(key, now), caller.ttl_s), scope)
        count, remaining = self.local.reserve(key, limit.window_s, now)
        return Slot(key, "local", count, remaining)

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
