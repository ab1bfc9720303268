"""THE public URL table (spec README, "Services and the public URL table"): one source for the ALB listener
rules, the compose edge proxy, the dev server's route order, and the drift tests.

First match wins; the order is the ALB rule priority. Patterns use ALB path-pattern syntax (`*` matches any run
of characters; AWS docs: "Path conditions" for Application Load Balancer listener rules), which the ALB matches
case-sensitively. The services match as Express did, case-insensitively (contract-core §1.3), except the
gateway's exact `/ws/desktop`; `ignore_case` says so per rule, and the nginx edge and the dev server route that
way. The ALB cannot: on AWS `/API/LOGIN` reaches the default service (api), which answers 404 JSON.
Services own their full paths: nothing rewrites a path anywhere.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from fnmatch import fnmatchcase

AUTH = "auth"
GATEWAY = "ws-gateway"
API = "api"
SERVICES = (AUTH, GATEWAY, API)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True)
class Rule:
    priority: int
    patterns: tuple[str, ...]
    service: str
    ignore_case: bool = False  # the service matches these paths in any case (Express routing)

    def matches(self, path: str, *, case_sensitive: bool = True) -> bool:
        if not case_sensitive and self.ignore_case:
            path = path.translate(_ASCII_LOWER)  # the patterns are lower case; ASCII only, like nginx's `~*`
        return any(fnmatchcase(path, p) for p in self.patterns)


RULES: tuple[Rule, ...] = (
    # The trailing-slash variants keep Express's tolerant matching (contract-core §1.3) at the edge too.
    Rule(
        10,
        ("/api/login", "/api/login/", "/api/desktop/login-authcode", "/api/desktop/login-authcode/"),
        AUTH,
        ignore_case=True,
    ),
    Rule(20, ("/ws/desktop",), GATEWAY),  # the ws library's exact path, as before (contract-core §8.7)
    Rule(30, ("/api", "/api/*"), API, ignore_case=True),
)
assert all(p == p.lower() for rule in RULES for p in rule.patterns)
DEFAULT_SERVICE = API  # everything else, including /health and /ready at the edge

# The port each service listens on inside its container and in compose (PORT is the contract's 4000 for all;
# the edge proxy and the dev server are the ones on 4000 when several run on one host).
SERVICE_PORTS = {AUTH: 4001, GATEWAY: 4002, API: 4003}


def service_for(path: str, *, case_sensitive: bool = True) -> str:
    """The service `path` goes to: as the ALB routes it, or (`case_sensitive=False`) as the services match it,
    which is how the nginx edge and the dev server route."""
    for rule in RULES:
        if rule.matches(path, case_sensitive=case_sensitive):
            return rule.service
    return DEFAULT_SERVICE
