"""What the deployment derives from the code: the services, their ports and modules, and the timing chain that
keeps connections and shutdowns consistent from the load balancer down to uvicorn.

Every number here is either taken from the code (core/ccsm_core/routing.py, server.py, settings.py) or checked
against it, so a change there shows up in the rendered files and in tests/deploy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ccsm_core.routing import API, AUTH, DEFAULT_SERVICE, GATEWAY, RULES, SERVICE_PORTS, SERVICES, Rule
from ccsm_core.server import KEEP_ALIVE_S, WATCHDOG_MARGIN_S, WS_PING_INTERVAL_S
from ccsm_core.settings import Settings

__all__ = [
    "ALB_IDLE_TIMEOUT_S",
    "DEFAULT_SERVICE",
    "DEREGISTRATION_DELAY_S",
    "RULES",
    "SERVICES",
    "SHUTDOWN_FORCE_MS",
    "SHUTDOWN_GRACE_MS",
    "STOP_TIMEOUT_S",
    "Rule",
    "ServiceDeploy",
    "deployments",
    "service_deploy",
]

_DEFAULTS = Settings()
SHUTDOWN_GRACE_MS = _DEFAULTS.shutdown_grace_ms  # runbook §4: 15000
SHUTDOWN_FORCE_MS = _DEFAULTS.shutdown_force_ms  # runbook §4: 30000

# The ALB's default idle timeout (AWS: "Connection idle timeout", 60 s). It must stay below uvicorn's keep-alive
# (server.py KEEP_ALIVE_S = 75) or the ALB reuses connections the target already closed (502s); and it must stay
# above the 30 s WebSocket heartbeat so an idle desktop socket is never cut by the balancer.
ALB_IDLE_TIMEOUT_S = 60

# ECS sends SIGTERM, waits stopTimeout, then SIGKILL (Fargate allows at most 120 s). The process itself exits by
# SHUTDOWN_FORCE_MS plus the watchdog margin, so the stop timeout leaves a few seconds beyond that.
STOP_TIMEOUT_S = math.ceil(SHUTDOWN_FORCE_MS / 1000 + WATCHDOG_MARGIN_S) + 3

# The target group's draining time: shorter than the grace period, so the ALB has stopped sending new requests
# well before the process starts cancelling what is still in flight.
DEREGISTRATION_DELAY_S = 10

assert WS_PING_INTERVAL_S < ALB_IDLE_TIMEOUT_S < KEEP_ALIVE_S
assert DEREGISTRATION_DELAY_S < SHUTDOWN_GRACE_MS / 1000
assert STOP_TIMEOUT_S <= 120


@dataclass(frozen=True)
class ServiceDeploy:
    name: str  # the URL table's name (auth, api, ws-gateway)
    logical: str  # CloudFormation logical-id stem
    package: str  # the uv workspace member (ccsm-auth) = the Docker build arg
    module: str  # `python -m <module>`
    port: int
    cpu: int  # Fargate CPU units
    memory: int  # MiB
    nofile: int | None = None  # the gateway holds one socket per desktop

    @property
    def upstream(self) -> str:
        """The nginx upstream name."""
        return "ccsm_" + self.name.replace("-", "_")

    @property
    def image_repository(self) -> str:
        return f"ccsm-{self.name}"


_PROFILES = {
    # bcrypt at 12 rounds is the heaviest thing any request does: auth gets a full vCPU.
    AUTH: ServiceDeploy(AUTH, "Auth", "ccsm-auth", "ccsm_auth", SERVICE_PORTS[AUTH], cpu=1024, memory=2048),
    GATEWAY: ServiceDeploy(
        GATEWAY, "Gateway", "ccsm-gateway", "ccsm_gateway", SERVICE_PORTS[GATEWAY], cpu=512, memory=1024, nofile=65536
    ),
    API: ServiceDeploy(API, "Api", "ccsm-api", "ccsm_api", SERVICE_PORTS[API], cpu=512, memory=1024),
}


def service_deploy(name: str) -> ServiceDeploy:
    return _PROFILES[name]


def deployments() -> list[ServiceDeploy]:
    """Every service, in the URL table's service order."""
    assert set(_PROFILES) == set(SERVICES), "a service of the URL table has no deployment profile"
    return [_PROFILES[name] for name in SERVICES]
