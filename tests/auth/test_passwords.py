"""The hashing pool and the password policy (passwords.py), without HTTP."""

from __future__ import annotations

import asyncio
import threading
import time

import bcrypt
import pytest

from ccsm_auth.passwords import ARGON2ID, BCRYPT, PLAINTEXT, Passwords, bcrypt_input, scheme_of
from ccsm_core.errors import ApiError

BCRYPTJS_VECTOR = "$2a$12$g9.TbVmcC44iXcgmdbEu8OzuERbSdgcVBRDCMZR72C5vGVMtnXoR2"  # interop-vectors.json


@pytest.mark.parametrize(
    ("stored", "scheme"),
    [
        (BCRYPTJS_VECTOR, BCRYPT),
        (BCRYPTJS_VECTOR.replace("$2a$", "$2y$"), BCRYPT),
        (BCRYPTJS_VECTOR.replace("$2a$", "$2b$"), BCRYPT),
        (BCRYPTJS_VECTOR.replace("$2a$", "$2x$"), PLAINTEXT),
        (BCRYPTJS_VECTOR[:-1], PLAINTEXT),  # 52 characters after the cost: not bcrypt, a literal password
        ("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", ARGON2ID),
        ("legacy123", PLAINTEXT),
        ("$1$md5$not-a-scheme-we-know", PLAINTEXT),
    ],
)
def test_the_stored_value_decides_the_scheme_like_the_old_is_bcrypt_test(stored: str, scheme: str) -> None:
    assert scheme_of(stored) == scheme


def test_bcrypt_sees_the_first_72_utf8_bytes() -> None:
    assert bcrypt_input("a" * 100) == b"a" * 72
    assert bcrypt_input("é" * 40) == ("é" * 40).encode()[:72]
    assert len(bcrypt_input("€" * 30)) == 72  # cut inside a character, as bcryptjs cut it


def test_the_rehash_policy_moves_rows_to_the_configured_scheme_only() -> None:
    bcrypt_pw = Passwords(BCRYPT, 8, workers=1)
    argon_pw = Passwords(ARGON2ID, 8, workers=1)
    try:
        argon_hash = argon_pw.argon2.hash("x")
        weak_argon = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
        assert bcrypt_pw.needs_rehash("legacy123")
        assert not bcrypt_pw.needs_rehash(BCRYPTJS_VECTOR)  # any bcrypt cost is kept: no write per login
        assert bcrypt_pw.needs_rehash(argon_hash)  # PASSWORD_HASH back to bcrypt: the rollback path
        assert argon_pw.needs_rehash("legacy123")
        assert argon_pw.needs_rehash(BCRYPTJS_VECTOR)
        assert not argon_pw.needs_rehash(argon_hash)
        assert argon_pw.needs_rehash(weak_argon)  # parameters below OWASP's are upgraded
    finally:
        bcrypt_pw.close()
        argon_pw.close()


def test_new_bcrypt_hashes_use_the_bcryptjs_prefix_and_the_configured_cost() -> None:
    async def scenario() -> str:
        pw = Passwords(BCRYPT, 9, workers=1)
        try:
            return await pw.hash("Secret#1")
        finally:
            pw.close()

    stored = asyncio.run(scenario())
    assert stored.startswith("$2a$09$")
    assert bcrypt.checkpw(b"Secret#1", stored.encode())


def test_an_absurd_stored_cost_is_refused_without_hashing() -> None:
    """A `$2a$31$` row would hold a worker for days; it cannot be a real password and is not verified."""

    async def scenario() -> tuple[bool, float]:
        pw = Passwords(BCRYPT, 8, workers=1)
        try:
            started = time.perf_counter()
            result = await pw.verify(["x"], "$2a$31$" + BCRYPTJS_VECTOR[7:])
            return result.ok, time.perf_counter() - started
        finally:
            pw.close()

    ok, took = asyncio.run(scenario())
    assert ok is False
    assert took < 5


def test_hashing_runs_off_the_event_loop() -> None:
    async def scenario() -> bool:
        pw = Passwords(BCRYPT, 12, workers=1)
        try:
            task = asyncio.create_task(pw.hash("x"))
            for _ in range(50):  # if the hash ran on the loop, the task would already be done here
                await asyncio.sleep(0)
            running_elsewhere = not task.done()
            await task
            return running_elsewhere
        finally:
            pw.close()

    assert asyncio.run(scenario()) is True


class CountingPasswords(Passwords):
    """A fake hash that records how many run at once and waits until the test lets it finish."""

    def __init__(self, workers: int, max_waiting: int) -> None:
        super().__init__(BCRYPT, 8, workers=workers, max_waiting=max_waiting)
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def _hash_sync(self, password: str) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.started.release()
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return "h"


def test_at_most_one_hash_per_worker_runs_and_excess_waiters_are_shed_with_503() -> None:
    async def scenario() -> tuple[int, int, list[object]]:
        pw = CountingPasswords(workers=2, max_waiting=3)
        try:
            tasks = [asyncio.create_task(pw.hash(str(i))) for i in range(5)]  # 2 running + 3 waiting
            for _ in range(2):
                await asyncio.get_running_loop().run_in_executor(None, pw.started.acquire)
            with pytest.raises(ApiError) as shed:
                await pw.hash("one too many")
            pw.release.set()
            results = await asyncio.gather(*tasks)
            assert shed.value.status == 503
            assert shed.value.headers == {"Retry-After": "1"}
            return pw.peak, pw.shed, list(results)
        finally:
            pw.close()

    peak, shed, results = asyncio.run(scenario())
    assert peak == 2
    assert shed == 1
    assert results == ["h"] * 5


def test_a_failure_on_a_cheap_hash_is_padded_to_the_configured_cost() -> None:
    async def scenario() -> tuple[float, float, float]:
        pw = Passwords(BCRYPT, 10, workers=1)
        try:
            await pw.start()
            cheap = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
            started = time.perf_counter()
            result = await pw.verify(["wrong"], cheap)
            await pw.pad_failure(1, result.spent_s)
            return time.perf_counter() - started, result.spent_s, pw.reference_s
        finally:
            pw.close()

    took, spent, reference = asyncio.run(scenario())
    assert spent < reference / 4  # cost 4 is 64 times cheaper than cost 10
    assert took >= reference * 0.95
