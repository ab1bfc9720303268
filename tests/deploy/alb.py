"""What an ALB listener does with a request, from its rules as the template declares them or as the ELB API reads
them back: rules by ascending priority, the first whose conditions all hold (path pattern, source address) acts,
else the default action. And what it should do, from the URL table."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ccsm_core.routing import RULES, service_for
from deploy.cloudformation import FORBIDDEN_BODY
from deploy.topology import SITE_RESTRICTED_PATHS

Decision = tuple[str, ...]  # ("forward", service) or ("fixed-response", status, body)
SITE_ADDRESS = "198.51.100.23"
OTHER_ADDRESS = "192.0.2.99"

SAMPLE_PATHS = sorted(
    {p.replace("*", "x/y") for rule in RULES for p in rule.patterns}
    | {"/", "/health", "/ready", "/API/login", "/api/login/x", "/apix", "/ws/desktop/", "/ws", "/api/users/1"}
    | {"/API/DESKTOP/LOGIN-AUTHCODE", "/api/desktop/login-authcodex", "/api/desktop/bootstrap"}
)


@dataclass(frozen=True)
class Rule:
    priority: int
    patterns: tuple[str, ...]
    sources: tuple[str, ...] | None  # None: no source-ip condition
    action: Decision


def matches_glob(path: str, patterns: Iterable[str]) -> bool:
    regex = "|".join(re.escape(p).replace(r"\*", ".*").replace(r"\?", ".") for p in patterns)
    return re.fullmatch(regex, path) is not None


def decide(rules: list[Rule], default: Decision, path: str, client: str) -> Decision:
    ip = ipaddress.ip_address(client)
    for rule in sorted(rules, key=lambda r: r.priority):
        if not matches_glob(path, rule.patterns):
            continue
        if rule.sources is not None and not any(ip in ipaddress.ip_network(c) for c in rule.sources):
            continue
        return rule.action
    return default


def expected(path: str, client: str, sites: Iterable[str]) -> Decision:
    """The URL table's answer; a site-restricted path from outside the sites is the error table's 403."""
    restricted = any(matches_glob(path, (p, p + "/")) for p in SITE_RESTRICTED_PATHS)
    inside = any(ipaddress.ip_address(client) in ipaddress.ip_network(c) for c in sites)
    if restricted and not inside:
        return ("fixed-response", "403", FORBIDDEN_BODY)
    return ("forward", service_for(path))


def parse_action(action: dict[str, Any], service_of: Callable[[Any], str]) -> Decision:
    if action["Type"] == "forward":
        return ("forward", service_of(action["TargetGroupArn"]))
    if action["Type"] == "fixed-response":
        config = action["FixedResponseConfig"]
        assert config["ContentType"] == "application/json"
        return ("fixed-response", str(config["StatusCode"]), config["MessageBody"])
    raise AssertionError(f"unexpected action {action}")


def parse_rule(
    priority: int,
    conditions: list[dict[str, Any]],
    actions: list[dict[str, Any]],
    service_of: Callable[[Any], str],
    sources_of: Callable[[Any], tuple[str, ...]],
) -> Rule:
    fields = [c["Field"] for c in conditions]
    assert len(fields) == len(set(fields)), fields
    assert set(fields) <= {"path-pattern", "source-ip"}, fields
    by_field = {c["Field"]: c for c in conditions}
    patterns = tuple(by_field["path-pattern"]["PathPatternConfig"]["Values"])
    sources = sources_of(by_field["source-ip"]["SourceIpConfig"]["Values"]) if "source-ip" in by_field else None
    (action,) = actions
    return Rule(priority, patterns, sources, parse_action(action, service_of))
