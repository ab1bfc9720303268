"""THE public URL table (spec README, "Services and the public URL table"): one source for the ALB listener
rules, the compose edge proxy, the dev server's route order, and the drift tests.

First match wins; the order is the ALB rule priority. Patterns use ALB path-pattern syntax (case-sensitive,
`*` matches any run of characters; AWS docs: "Path conditions" for Application Load Balancer listener rules).
Services own their full paths: nothing rewrites a path anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

AUTH = "auth"
GATEWAY = "ws-gateway"
API = "api"
SERVICES = (AUTH, GATEWAY, API)


@dataclass(frozen=True)
class Rule:
    priority: int
    patterns: tuple[str, ...]
    service: str


RULES: tuple[Rule, ...] = (
    # The trailing-slash variants keep Express's tolerant matching (contract-core §1.3) at the edge too.
    Rule(10, ("/api/login", "/api/login/", "/api/desktop/login-authcode", "/api/desktop/login-authcode/"), AUTH),
    Rule(20, ("/ws/desktop",), GATEWAY),
    Rule(30, ("/api", "/api/*"), API),
)
DEFAULT_SERVICE = API  # everything else, including /health and /ready at the edge

# The port each service listens on inside its container and in compose (PORT is the contract's 4000 for all;
# the edge proxy and the dev server are the ones on 4000 when several run on one host).
SERVICE_PORTS = {AUTH: 4001, GATEWAY: 4002, API: 4003}


def service_for(path: str) -> str:
    for rule in RULES:
        if any(fnmatchcase(path, p) for p in rule.patterns):
            return rule.service
    return DEFAULT_SERVICE
