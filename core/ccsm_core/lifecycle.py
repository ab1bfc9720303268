"""Liveness, readiness and the shutdown state every service shares (contract-core §2, fix 7)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from ccsm_core.codec import dumps, iso_utc
from ccsm_core.errors import unavailability_kind

log = logging.getLogger("ccsm.lifecycle")

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass
class Lifecycle:
    """Process state shown by /health and /ready; the server runner flips `shutting_down` on SIGTERM."""

    service: str
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started_monotonic: float = field(default_factory=time.monotonic)
    shutting_down: bool = False
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    # Which registered checks /ready runs: a service's *real* dependencies (api: db; auth: db, redis;
    # ws-gateway: redis). None means every registered check.
    required: frozenset[str] | None = None
    ready_timeout_s: float = 2.0  # fix 7: /ready answers within a bounded time
    _on_shutdown: list[Callable[[], None]] = field(default_factory=list)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        """Run `callback` (synchronously, from the event loop) the moment shutdown begins."""
        self._on_shutdown.append(callback)

    def begin_shutdown(self) -> bool:
        """Mark shutting down; returns False when it already was (later signals are ignored)."""
        if self.shutting_down:
            return False
        self.shutting_down = True
        for callback in self._on_shutdown:
            try:
                callback()
            except Exception:
                log.exception("shutdown callback failed")
        return True

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "service": self.service,
            "startedAt": iso_utc(self.started_at),
            "uptimeSec": int(time.monotonic() - self.started_monotonic),
            "shuttingDown": self.shutting_down,
        }

    async def readiness(self) -> tuple[int, dict[str, str]]:
        if self.shutting_down:
            return 503, {"status": "not-ready", "reason": "shutting-down"}
        names = [n for n in self.checks if self.required is None or n in self.required]
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[n](), self.ready_timeout_s) for n in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                # fix 7: the driver's message goes to the log, never to the caller; the caller gets its kind
                # (issue 16: `db-access-denied` is not an outage to wait out, `db-unreachable` may be)
                kind = unavailability_kind(result) if name == "db" else "unreachable"
                cause = result.__cause__ or result
                log.warning(
                    "readiness check failed",
                    extra={
                        "check": name,
                        "reason": f"{name}-{kind}",
                        "error": type(cause).__name__,
                        "detail": str(cause)[:300],
                    },
                )
                return 503, {"status": "not-ready", "reason": f"{name}-{kind}"}
        return 200, {"status": "ready"}


def lifecycle_of(request: Request) -> Lifecycle:
    lc: Lifecycle = request.state.lifecycle
    return lc


async def health(request: Request) -> Response:
    return Response(dumps(lifecycle_of(request).health()), media_type="application/json")


async def ready(request: Request) -> Response:
    status, body = await lifecycle_of(request).readiness()
    return Response(dumps(body), status_code=status, media_type="application/json")
