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
    "SITE_RESTRICTED_PATHS",
    "STOP_TIMEOUT_S",
    "AlbRule",
    "Rule",
    "ServiceDeploy",
    "alb_rules",
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
    # The target response time whose p99 over 5 minutes raises an alarm: auth spends ~0.3 s of CPU per bcrypt
    # hash at 12 rounds and pads failures to look alike (passwords.py); the gateway's is the WebSocket upgrade.
    p99_alarm_s: float = 1.0

    @property
    def upstream(self) -> str:
        """The nginx upstream name."""
        return "ccsm_" + self.name.replace("-", "_")

    @property
    def image_repository(self) -> str:
        return f"ccsm-{self.name}"


_PROFILES = {
    # bcrypt at 12 rounds is the heaviest thing any request does: auth gets a full vCPU.
    AUTH: ServiceDeploy(
        AUTH, "Auth", "ccsm-auth", "ccsm_auth", SERVICE_PORTS[AUTH], cpu=1024, memory=2048, p99_alarm_s=2.0
    ),
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


# --- the ALB's listener rules --------------------------------------------------------------------------------

# The desktop's auth-code login may be limited to the networks the desktops run in (issue 12: a 3-digit code space
# cannot be protected by rate limits alone). Only the ALB can do it (compose's edge serves one machine): the
# template's `DesktopSiteCidrs` parameter, open by default.
SITE_RESTRICTED_PATHS = ("/api/desktop/login-authcode",)

# AWS: "up to three match evaluations per condition" and "up to five match evaluations per rule" (Elastic Load
# Balancing, "Condition types for listener rules"; the quota "Condition values per rule" is 5).
ALB_VALUES_PER_CONDITION = 3
ALB_VALUES_PER_RULE = 5
ALB_SITE_CIDRS_MAX = 3  # a restricted rule's path condition holds the path and its trailing-slash variant


@dataclass(frozen=True)
class AlbRule:
    """One listener rule as the ALB sees it: where the URL table's rule is split, why."""

    priority: int
    patterns: tuple[str, ...]
    service: str  # the target group it forwards to; for a `deny` rule, the service the path belongs to
    from_sites: bool = False  # a source-ip condition: DesktopSiteCidrs
    deny: bool = False  # a fixed 403 `{"error":"Forbidden"}` instead of forwarding

    @property
    def logical(self) -> str:
        return f"{_PROFILES[self.service].logical}Rule{self.priority}"


def _restricted(pattern: str) -> bool:
    return pattern.rstrip("/") in SITE_RESTRICTED_PATHS


def alb_rules() -> list[AlbRule]:
    """The URL table as listener rules. A table rule keeps its priority; its site-restricted patterns (with their
    trailing-slash variants) move to the next two priorities: forwarded from `DesktopSiteCidrs`, and answered 403
    from anywhere else, so they never fall through to a later rule (`/api/*` would send them to the api service)."""
    out: list[AlbRule] = []
    priorities = [r.priority for r in RULES]
    for index, rule in enumerate(RULES):
        open_patterns = tuple(p for p in rule.patterns if not _restricted(p))
        restricted = tuple(p for p in rule.patterns if _restricted(p))
        for chunk_start in range(0, len(open_patterns), ALB_VALUES_PER_CONDITION):
            chunk = open_patterns[chunk_start : chunk_start + ALB_VALUES_PER_CONDITION]
            out.append(AlbRule(rule.priority + chunk_start // ALB_VALUES_PER_CONDITION, chunk, rule.service))
        if restricted:
            base = out[-1].priority + 1 if open_patterns else rule.priority
            out.append(AlbRule(base, restricted, rule.service, from_sites=True))
            out.append(AlbRule(base + 1, restricted, rule.service, deny=True))
        following = priorities[index + 1] if index + 1 < len(priorities) else math.inf
        assert out[-1].priority < following, f"rule {rule.priority} needs more priorities than the table leaves"
    for alb_rule in out:
        assert len(alb_rule.patterns) <= ALB_VALUES_PER_CONDITION
        assert len(alb_rule.patterns) + (ALB_SITE_CIDRS_MAX if alb_rule.from_sites else 0) <= ALB_VALUES_PER_RULE
    restricted_found = {p.rstrip("/") for r in out if r.from_sites for p in r.patterns}
    assert restricted_found == set(SITE_RESTRICTED_PATHS), "a site-restricted path is not in the URL table"
    return out
