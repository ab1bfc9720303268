"""Service metrics as CloudWatch Embedded Metric Format (EMF) lines in the JSON log (runbook §10; issue 14).

Recording is a few dict and list operations on the event loop, nothing else: a request adds to the counters of its
route and status class, a latency lands in a fixed log-spaced histogram. Every `interval_s` (and once more when the
service stops) the flush writes one EMF line per set of dimension values that saw anything, through the `ccsm.metrics`
logger, so the lines share stdout (and the awslogs driver) with the other JSON lines; CloudWatch Logs extracts the
metrics from them (AWS: "Specification: Embedded metric format", the `_aws` member).

What is measured, per service (the `Service` dimension):
- `Requests`, `LatencyP50`, `LatencyP99`, `LatencyMax` by `RouteFamily` (the first two segments of the matched
  route's path, `/api/users`; `unmatched` for a 404) and `StatusClass` (`2xx` ... `5xx`).
- `LoginFailures` by `Endpoint` (`login`, `authcode`): the auth service's `auth.login.failed` events.
- `Ready`: 1 when the service's readiness checks pass at the flush, else 0 (the `/ready` alarm's source).
- the gateway's `OpenSockets` (at the flush), `Broadcasts`, `FanoutP50`/`FanoutP99`/`FanoutMax` (milliseconds to
  hand one event to every socket) and `SlowConsumerCloses` (sockets closed with 1013).

Percentiles come from the histogram (each bucket 25 % wider than the last, so a reported percentile is within 25 %
of the true one), per task and interval; the ALB's `TargetResponseTime` gives the per-service percentiles across
tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("ccsm.metrics")
log.setLevel(logging.INFO)  # metrics are not log chatter: LOG_LEVEL=warning must not silence them

DEFAULT_NAMESPACE = "CCSM/local"
DEFAULT_INTERVAL_S = 60.0  # CloudWatch's standard resolution

# Metric and dimension names: the CloudFormation alarms and dashboard (deploy/cloudformation.py) use these.
SERVICE = "Service"
ROUTE_FAMILY = "RouteFamily"
STATUS_CLASS = "StatusClass"
ENDPOINT = "Endpoint"
REQUESTS = "Requests"
LATENCY_P50, LATENCY_P99, LATENCY_MAX = "LatencyP50", "LatencyP99", "LatencyMax"
LOGIN_FAILURES = "LoginFailures"
READY = "Ready"
OPEN_SOCKETS = "OpenSockets"
BROADCASTS = "Broadcasts"
FANOUT_P50, FANOUT_P99, FANOUT_MAX = "FanoutP50", "FanoutP99", "FanoutMax"
SLOW_CONSUMER_CLOSES = "SlowConsumerCloses"
UNMATCHED = "unmatched"

# Histogram bucket upper bounds in milliseconds: 0.05 ms to ~3 min, each 1.25x the previous (68 buckets).
BOUNDS: tuple[float, ...] = tuple(0.05 * 1.25**i for i in range(68))
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Histogram:
    """Count, maximum and a log-spaced bucket histogram of durations in milliseconds."""

    __slots__ = ("buckets", "count", "max")

    def __init__(self) -> None:
        self.count = 0
        self.max = 0.0
        self.buckets = [0] * (len(BOUNDS) + 1)

    def add(self, ms: float) -> None:
        self.count += 1
        if ms > self.max:
            self.max = ms
        self.buckets[bisect_right(BOUNDS, ms)] += 1

    def merge(self, other: Histogram) -> None:
        self.count += other.count
        self.max = max(self.max, other.max)
        for i, n in enumerate(other.buckets):
            self.buckets[i] += n

    def percentile(self, fraction: float) -> float:
        """The upper bound of the bucket holding the `fraction` quantile, capped at the maximum seen."""
        rank = fraction * self.count
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if n and seen >= rank:
                return round(min(BOUNDS[i] if i < len(BOUNDS) else self.max, self.max), 3)
        return round(self.max, 3)


def route_family(path: str) -> str:
    """`/api/users/{id}` -> `/api/users`: the first two segments of a route's path template."""
    return "/" + "/".join(path.strip("/").split("/")[:2])


Readiness = Callable[[], Awaitable[bool | None]]  # None: nothing to report (the service is draining)


class Metrics:
    """One per service process: recorded on the event loop, flushed as EMF lines by `run` (in the lifespan)."""

    def __init__(
        self, service: str, namespace: str = DEFAULT_NAMESPACE, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.interval_s = interval_s
        # id of the route object (scope["route"]) -> a histogram per status class; routes are few
        self._requests: dict[int, list[Histogram]] = {}
        self._routes: dict[int, Any] = {}
        self._families: dict[int, str] = {}
        self._login_failures: dict[str, int] = {}
        self._fanout = Histogram()
        self._gauges: list[tuple[str, Callable[[], float]]] = []
        self._counters: list[tuple[str, Callable[[], int], list[int]]] = []
        self._readiness: Readiness | None = None

    # --- recording (hot paths) ----------------------------------------------------------------------------------

    def request(self, route: Any, status: int, seconds: float) -> None:
        """One HTTP request: its matched route (`scope["route"]`, None when nothing matched), status, duration."""
        key = id(route)  # Starlette's routes define __eq__ and so are unhashable; each lives as long as its app
        per_class = self._requests.get(key)
        if per_class is None:  # once per route and interval
            per_class = self._requests[key] = [Histogram() for _ in STATUS_CLASSES]
            self._routes[key] = route  # held, so the id is never reused
        index = status // 100 - 1
        if index < 0:
            return  # no response was started (the client went away first): nothing was answered
        per_class[index if index < 5 else 4].add(seconds * 1000.0)

    def login_failed(self, endpoint: str) -> None:
        self._login_failures[endpoint] = self._login_failures.get(endpoint, 0) + 1

    def broadcast(self, seconds: float) -> None:
        """One db-changed event handed to every socket of the process, in `seconds`."""
        self._fanout.add(seconds * 1000.0)

    # --- sources read at each flush -----------------------------------------------------------------------------

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """A value read at each flush (open sockets)."""
        self._gauges.append((name, read))

    def counter(self, name: str, read: Callable[[], int]) -> None:
        """A running total kept elsewhere (`Hub.slow_closed`): each flush reports what it grew by."""
        self._counters.append((name, read, [read()]))

    def readiness(self, check: Readiness) -> None:
        self._readiness = check

    # --- flushing -----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Flush every interval until cancelled (the lifespan then calls `flush(final=True)`)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("metrics flush failed")

    async def flush(self, final: bool = False) -> int:
        """Write the interval's EMF lines and start a new interval; returns how many lines were written. The final
        flush (shutdown) reports no readiness: a draining task is not-ready by design, not failing."""
        ready: bool | None = None
        if self._readiness is not None and not final:
            ready = await self._readiness()
        lines = self.collect(ready)
        for line in lines:
            log.info("metrics", extra=line)
        return len(lines)

    def collect(self, ready: bool | None = None) -> list[dict[str, Any]]:
        """The interval's EMF documents (one per set of dimension values); resets the interval."""
        timestamp = int(time.time() * 1000)
        lines: list[dict[str, Any]] = []
        requests, self._requests = self._requests, {}
        merged: dict[tuple[str, int], Histogram] = {}
        for key, per_class in requests.items():
            family = self._family(key)
            for index, hist in enumerate(per_class):
                if hist.count:
                    merged.setdefault((family, index), Histogram()).merge(hist)
        for (family, index), hist in sorted(merged.items()):
            lines.append(
                self._document(
                    timestamp,
                    {ROUTE_FAMILY: family, STATUS_CLASS: STATUS_CLASSES[index]},
                    {
                        REQUESTS: (hist.count, "Count"),
                        LATENCY_P50: (hist.percentile(0.50), "Milliseconds"),
                        LATENCY_P99: (hist.percentile(0.99), "Milliseconds"),
                        LATENCY_MAX: (round(hist.max, 3), "Milliseconds"),
                    },
                )
            )
        failures, self._login_failures = self._login_failures, {}
        for endpoint, count in sorted(failures.items()):
            lines.append(self._document(timestamp, {ENDPOINT: endpoint}, {LOGIN_FAILURES: (count, "Count")}))
        values: dict[str, tuple[float, str]] = {}
        if ready is not None:
            values[READY] = (1 if ready else 0, "None")
        for name, read in self._gauges:
            values[name] = (read(), "Count")
        for name, read_total, last in self._counters:
            total = read_total()
            values[name] = (total - last[0], "Count")
            last[0] = total
        fanout, self._fanout = self._fanout, Histogram()
        if self._gauges or fanout.count:
            values[BROADCASTS] = (fanout.count, "Count")
        if fanout.count:
            values[FANOUT_P50] = (fanout.percentile(0.50), "Milliseconds")
            values[FANOUT_P99] = (fanout.percentile(0.99), "Milliseconds")
            values[FANOUT_MAX] = (round(fanout.max, 3), "Milliseconds")
        if values:
            lines.append(self._document(timestamp, {}, values))
        return lines

    def _family(self, key: int) -> str:
        family = self._families.get(key)
        if family is None:
            path = getattr(self._routes[key], "path", None)
            family = self._families[key] = route_family(path) if isinstance(path, str) else UNMATCHED
        return family

    def _document(
        self, timestamp: int, dimensions: dict[str, str], values: dict[str, tuple[float, str]]
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [[SERVICE, *dimensions]],
                        "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                    }
                ],
            },
            SERVICE: self.service,
            **dimensions,
        }
        doc.update({name: value for name, (value, _) in values.items()})
        return doc


async def flushing(metrics: Metrics) -> Callable[[], Awaitable[None]]:
    """Start the periodic flush; returns the coroutine function that stops it and flushes the rest."""
    task = asyncio.get_running_loop().create_task(metrics.run(), name="metrics-flush")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await metrics.flush(final=True)

    return stop
