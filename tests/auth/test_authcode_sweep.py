"""Issue 12 item 1: a sweep of every 3-digit code from 20 addresses, against the auth service as it runs (a real
uvicorn process that sees each client's loopback source address as its peer).

Only the global failed-code budget's worth of guesses is evaluated (counted from the service's own
`auth.login.failed` events, not guessed from the responses), while the right code typed from an address that has
not failed still gets in during the sweep.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from ccsm_core.settings import Settings
from tests.harness import ServiceProcess, running

SWEEPERS = [f"127.0.10.{i}" for i in range(1, 21)]
OPERATOR = "127.0.20.1"  # an address that never failed: a desktop at a site during the attack
MARKER = "127.0.30.1"  # its success is the last log line: every earlier line has been read by then
BUDGET = 100


@contextmanager
def clients(proc: ServiceProcess, addresses: list[str]) -> Iterator[dict[str, httpx.Client]]:
    with ExitStack() as stack:
        yield {
            a: stack.enter_context(
                httpx.Client(base_url=proc.base_url, timeout=10, transport=httpx.HTTPTransport(local_address=a))
            )
            for a in addresses
        }


def events(proc: ServiceProcess, name: str, ips: set[str]) -> list[dict[str, object]]:
    return [
        e
        for e in proc.log_events()
        if e.get("event") == name and e.get("endpoint") == "authcode" and e.get("ip") in ips
    ]


@pytest.mark.slow
def test_a_sweep_of_every_code_from_20_addresses_is_evaluated_only_the_budgets_worth_of_times(
    auth_settings: Settings,
) -> None:
    settings = dataclasses.replace(auth_settings, log_level="info")
    statuses: dict[int, int] = {}
    retry_after_ok = True
    env = {"AUTHCODE_FAILURES_GLOBAL": str(BUDGET)}
    with running("ccsm_auth", settings, extra_env=env) as proc, clients(proc, [*SWEEPERS, OPERATOR, MARKER]) as by_ip:
        started = time.monotonic()
        operator = None
        for n in range(1000):
            if n == 500:  # well past the budget: the attack is under way
                operator = by_ip[OPERATOR].post("/api/desktop/login-authcode", json={"code": "888"})
            r = by_ip[SWEEPERS[n % 20]].post("/api/desktop/login-authcode", json={"code": f"{n:03d}"})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 429:
                retry_after_ok = retry_after_ok and int(r.headers.get("retry-after", "0")) >= 1
        took = time.monotonic() - started
        marker = by_ip[MARKER].post("/api/desktop/login-authcode", json={"code": "777"})
        proc.wait_for_line(f'"ip":"{MARKER}"')
    failed = events(proc, "auth.login.failed", set(SWEEPERS))
    succeeded = events(proc, "auth.login.succeeded", set(SWEEPERS))
    print(f"sweep: {len(failed)} codes evaluated and failed, {len(succeeded)} succeeded, {statuses}, {took:.1f} s")
    assert len(failed) <= BUDGET
    assert len(failed) + len(succeeded) <= BUDGET + 4  # at most the seed's four active codes on top
    assert statuses.get(429, 0) >= 1000 - BUDGET - 4
    assert retry_after_ok
    assert operator is not None
    assert operator.status_code == 200
    assert operator.json()["login"] == "pnair"
    assert marker.json()["login"] == "mreyes"
    # Detection: each failure is the structured event the CloudFormation metric filter counts, without the code.
    assert all(e["reason"] == "unknown_or_inactive_code" and "code" not in e for e in failed)
