"""What a developer hands to DevOps (runbook §13), generated so it cannot drift: the release (commit and tag), every
environment variable with its format and how the ECS stack sets it, the database and Redis connectivity, and the
feature flags. The variables, formats and defaults come from the Settings fields (core/ccsm_core/settings.py), how
the stack sets them from the task definitions the template renders (deploy/cloudformation.py).

    python -m deploy.handoff           # the handoff note for this checkout (its commit and tag first)
    python -m deploy.handoff --readme  # the part kept in ecs/README.md (tests/deploy/test_handoff.py compares)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from ccsm_core import service
from ccsm_core.settings import FLAG, EnvVar, Settings, env_vars
from deploy import cloudformation
from deploy.render import ROOT
from deploy.topology import deployments

DEFAULTS = Settings()


def users_of(resource: Any) -> list[str]:
    """The services that open `resource` in their lifespan (their ServiceSpec), in the URL table's order."""
    from ccsm_api import app as api
    from ccsm_auth import app as auth
    from ccsm_gateway import app as gateway

    specs = [module.spec(DEFAULTS) for module in (auth, gateway, api)]
    return [spec.name for spec in specs if resource in spec.resources]


def stack_settings() -> dict[str, str]:
    """Variable -> how the api task definition sets it (every service's differs only in PORT)."""
    out: dict[str, str] = {}
    for entry in cloudformation._environment(0):
        conditional = "Fn::If" in entry
        if conditional:
            condition, entry = entry["Fn::If"][0], entry["Fn::If"][1]
        out[entry["Name"]] = describe(entry["Value"]) + (f" (when {condition})" if conditional else "")
    for entry in cloudformation._secrets():
        conditional = "Fn::If" in entry
        if conditional:
            entry = entry["Fn::If"][1]
        out[entry["Name"]] = f"secret `{entry['ValueFrom']['Ref']}`" + (" (optional)" if conditional else "")
    out["PORT"] = ", ".join(f"`{svc.port}` ({svc.name})" for svc in deployments())
    return out


def describe(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if "Ref" in value:
        return f"parameter `{value['Ref']}`"
    if "Fn::Sub" in value:
        return f"`{value['Fn::Sub']}`"
    if "Fn::Join" in value:
        return f"parameter `{value['Fn::Join'][1]['Ref']}` (joined with `,`)"
    raise ValueError(f"no description for {value!r}")


def _default(var: EnvVar) -> str:
    if var.default_doc is not None:
        return var.default_doc
    text = var.kind.dump(getattr(DEFAULTS, var.field))
    return f"`{text}`" if text else "—"


def readme_section() -> str:
    stack = stack_settings()
    variables = env_vars()
    lines = [
        "**Release.** The images are tagged with the commit (`git rev-parse --short=12 HEAD`), never `latest`;",
        "`python -m deploy.handoff` prints the commit and tag of the checkout it runs in, then this note.",
        "",
        "**Environment** (every variable the services read; `—`: not set by the stack, the default applies):",
        "",
        "| variable | format | default | set by the ECS stack |",
        "|---|---|---|---|",
    ]
    for var in variables:
        lines.append(f"| `{var.name}` | {var.kind.format} | {_default(var)} | {stack.get(var.name, '—')} |")
    pool = DEFAULTS.db_pool_size
    db_users = users_of(service.database)
    database = (
        "**Database.** MySQL 8 reachable from the tasks' security groups on `DB_PORT` (the stack adds the ingress "
        "to `DatabaseSecurityGroupId`): one database (`DB_NAME`) and a user (`DB_USER`) with DDL rights on it, "
        "for the migration task; its password only in the secret store. Used by "
        + ", ".join(db_users)
        + f": each task holds up to `DB_POOL_SIZE` ({pool}) connections, so at most {pool} per task times "
        + f"`MaxTasks` times {len(db_users)} services, plus one for the migration task. Sessions run in UTC "
        + "(README, time-zone model)."
    )
    redis = (
        "**Redis.** Redis 7 at `REDIS_URL` (no credentials in the URL) on `RedisPort` (the stack adds the ingress to "
        "`RedisSecurityGroupId`). Used by " + ", ".join(users_of(service.redis)) + "; every key and channel is under "
        "`REDIS_PREFIX`, so environments can share one Redis."
    )
    lines += [
        "",
        database,
        "",
        redis,
        "",
        "**Feature flags:**",
        "",
        "| flag | default | set by the ECS stack | meaning |",
        "|---|---|---|---|",
    ]
    for var in variables:
        if var.kind is FLAG:
            lines.append(f"| `{var.name}` | {_default(var)} | {stack.get(var.name, '—')} | {var.doc} |")
    return "\n".join(lines) + "\n"


def release() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603,S607
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    tag = git("describe", "--tags", "--exact-match") or "none"
    dirty = " (uncommitted changes: build from a clean checkout)" if git("status", "--porcelain") else ""
    return f"Release: commit `{commit}`, tag `{tag}`{dirty}; image tag `{commit}`.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.handoff", description=__doc__)
    parser.add_argument("--readme", action="store_true", help="only the part kept in ecs/README.md")
    args = parser.parse_args(argv)
    sys.stdout.write(readme_section() if args.readme else release() + "\n" + readme_section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
