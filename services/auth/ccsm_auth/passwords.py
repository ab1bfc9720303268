"""Password verification and hashing (contract-core §8.3), off the event loop with bounded concurrency.

Schemes, recognised from the stored value:
- bcrypt `$2a$`/`$2b$`/`$2y$` + two-digit cost + 53 characters (the old backend's "is bcrypt" test). New hashes
  are `$2a$` at `BCRYPT_ROUNDS`, byte-for-byte the format bcryptjs wrote, so the old backend verifies every hash
  after a rollback. bcrypt is the default and stays it.
- argon2id `$argon2id$...`, only written when `PASSWORD_HASH=argon2id` (OWASP Password Storage Cheat Sheet:
  m=19 MiB, t=2, p=1). Rows are rehashed to the configured scheme at the next successful login, in both
  directions: switching back to bcrypt turns argon2id rows back into bcrypt ones, the path for a rollback.
- anything else is a legacy plaintext row: compared in constant time, then upgraded at the next success.

The 72-byte rule: bcrypt reads at most 72 bytes, and bcryptjs silently used the first 72 bytes of the UTF-8
encoding. We do exactly the same (pyca/bcrypt 5 refuses longer input instead), so a long password still
verifies against a hash the old backend made, and is never a 500. argon2id and plaintext use the whole password.

Concurrency: every hash runs in a pool of one thread per usable core (bcrypt and argon2-cffi release the GIL), so
logins use the cores while the event loop keeps answering `/health`. At most `max_waiting` hashes queue behind
them; past that a login is shed with 503 + Retry-After instead of waiting tens of seconds.

Timing: a failed login costs the same whether the user exists or not. Unknown users are checked against a
dummy hash of the configured scheme and cost; and because stored hashes can be cheaper than the configured cost
(the seed's are cost 10), every failure is padded to the measured duration of a configured-cost verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ccsm_core.errors import ApiError

BCRYPT = "bcrypt"
ARGON2ID = "argon2id"
PLAINTEXT = "plaintext"

BCRYPT_MAX_BYTES = 72
MAX_BCRYPT_COST = 20  # a stored cost above this would hold a worker for minutes: treated as not verifiable
_BCRYPT_RE = re.compile(r"\$2[aby]\$(\d{2})\$[./A-Za-z0-9]{53}")

# OWASP Password Storage Cheat Sheet, argon2id: "a minimum configuration of 19 MiB of memory, an iteration
# count of 2, and 1 degree of parallelism".
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1

MAX_WAITING = 128  # hashes queued behind the busy workers before logins are shed with 503
EWMA_ALPHA = 0.2


def scheme_of(stored: str) -> str:
    if _BCRYPT_RE.fullmatch(stored):
        return BCRYPT
    if stored.startswith("$argon2id$"):
        return ARGON2ID
    return PLAINTEXT


def bcrypt_input(password: str) -> bytes:
    """The bytes bcrypt sees: the first 72 bytes of the UTF-8 encoding, as bcryptjs did."""
    return password.encode("utf-8", "surrogatepass")[:BCRYPT_MAX_BYTES]


def usable_cores() -> int:
    """CPUs this process may run on, limited by a cgroup v2 CPU quota (ECS task CPU units) when there is one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cores)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    scheme: str
    matched: str | None  # the candidate that matched (what an upgrade hashes)
    spent_s: float  # time spent hashing in the worker, for the timing pad


class Passwords:
    """The hashing pool and the policy: verify, hash, what needs rehashing, and the failure timing floor."""

    def __init__(
        self,
        scheme: str = BCRYPT,
        bcrypt_rounds: int = 12,
        workers: int | None = None,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        if scheme not in (BCRYPT, ARGON2ID):
            raise ValueError(scheme)
        self.scheme = scheme
        self.bcrypt_rounds = bcrypt_rounds
        self.workers = workers or usable_cores()
        self.max_waiting = max_waiting
        self.argon2 = argon2.PasswordHasher(
            time_cost=ARGON2_TIME_COST,
            memory_cost=ARGON2_MEMORY_KIB,
            parallelism=ARGON2_PARALLELISM,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="password-hash")
        self._pending = 0
        self.dummy_hash = ""
        self.reference_s = 0.0  # EWMA of one configured-cost verification, in the worker
        self.shed = 0

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the dummy hash and measure one verification against it (the failure timing floor)."""
        started = time.perf_counter()
        self.dummy_hash = await self._run(self._hash_sync, secrets.token_urlsafe(24))
        # Making a hash costs what verifying one does (same key schedule); verifications refine it later.
        self.reference_s = time.perf_counter() - started

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the pool ----------------------------------------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._pending >= self.workers + self.max_waiting:
            self.shed += 1
            raise ApiError(503, "Service unavailable", headers={"Retry-After": "1"})
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    # --- synchronous primitives (worker threads) ----------------------------------------------------------------

    def _hash_sync(self, password: str) -> str:
        if self.scheme == ARGON2ID:
            return str(self.argon2.hash(password))
        salt = bcrypt.gensalt(rounds=self.bcrypt_rounds, prefix=b"2a")
        return bcrypt.hashpw(bcrypt_input(password), salt).decode("ascii")

    def _verify_sync(self, password: str, stored: str) -> bool:
        scheme = scheme_of(stored)
        if scheme == BCRYPT:
            if int(stored[4:6]) > MAX_BCRYPT_COST:
                return False
            try:
                return bool(bcrypt.checkpw(bcrypt_input(password), stored.encode("ascii")))
            except ValueError:  # a malformed salt that still matched the shape
                return False
        if scheme == ARGON2ID:
            try:
                return bool(self.argon2.verify(stored, password))
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False
        return False

    def _timed_verify(self, password: str, stored: str) -> tuple[bool, float]:
        started = time.perf_counter()
        ok = self._verify_sync(password, stored)
        return ok, time.perf_counter() - started

    # --- policy ------------------------------------------------------------------------------------------------

    def _is_reference(self, stored: str) -> bool:
        """Does verifying `stored` cost what verifying the dummy costs (same scheme and parameters)?"""
        if self.scheme == BCRYPT:
            return scheme_of(stored) == BCRYPT and int(stored[4:6]) == self.bcrypt_rounds
        return scheme_of(stored) == ARGON2ID and not self.argon2.check_needs_rehash(stored)

    def _observe(self, spent: float) -> None:
        self.reference_s = spent if self.reference_s == 0 else (1 - EWMA_ALPHA) * self.reference_s + EWMA_ALPHA * spent

    async def verify(self, candidates: list[str], stored: str | None) -> Verification:
        """Try each candidate against `stored` (None: unknown user, checked against the dummy hash instead).

        Exactly one configured-cost operation per candidate happens whatever the outcome, except that a
        cheaper stored hash takes less; `pad_failure` evens that out.
        """
        if stored is None or stored == "":
            spent = 0.0
            for candidate in candidates:
                _, took = await self._run(self._timed_verify, candidate, self.dummy_hash)
                self._observe(took)
                spent += took
            return Verification(False, PLAINTEXT, None, spent)
        scheme = scheme_of(stored)
        if scheme == PLAINTEXT:
            expected = stored.encode("utf-8", "surrogatepass")
            for candidate in candidates:
                if hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), expected):
                    return Verification(True, PLAINTEXT, candidate, 0.0)
            # A legacy row answers as slowly as a hashed one (the upgrade's hash on success costs the same).
            failed = await self.verify(candidates, None)
            return Verification(False, PLAINTEXT, None, failed.spent_s)
        spent = 0.0
        reference = self._is_reference(stored)
        for candidate in candidates:
            ok, took = await self._run(self._timed_verify, candidate, stored)
            spent += took
            if reference:
                self._observe(took)
            if ok:
                return Verification(True, scheme, candidate, spent)
        return Verification(False, scheme, None, spent)

    async def pad_failure(self, attempts: int, spent_s: float) -> None:
        """Wait until a failure has taken as long as `attempts` configured-cost verifications would have.

        This is a deliberate delay on a response, not synchronisation: it makes a wrong password on a cheap
        (e.g. cost-10) hash, or a legacy row, as slow as an unknown user."""
        delay = attempts * self.reference_s - spent_s
        if delay > 0:
            await asyncio.sleep(delay)

    def needs_rehash(self, stored: str) -> bool:
        scheme = scheme_of(stored)
        if scheme == PLAINTEXT:
            return True
        if self.scheme == ARGON2ID:
            return scheme != ARGON2ID or bool(self.argon2.check_needs_rehash(stored))
        return scheme != BCRYPT  # bcrypt rows keep their cost: no write (and db-changed) per login

    async def hash(self, password: str) -> str:
        result: str = await self._run(self._hash_sync, password)
        return result
