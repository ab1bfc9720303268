"""The Docker engine, through the `docker` CLI (Debian's `docker.io` installs both): whether one answers, images
and containers as `docker inspect` reports them. Used by `make up`, `make offline-images` and the compose drills.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any


class EngineError(RuntimeError):
    """No Docker CLI, no engine answering, or a docker command that failed (its stderr is the message)."""


def docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        raise EngineError("the docker CLI is not installed (Debian: `apt-get install docker.io`)")
    return found


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one docker command and capture its output; a failure raises EngineError with docker's own words."""
    result = subprocess.run(  # noqa: S603 - the docker CLI with arguments built by this package
        [docker_binary(), *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise EngineError(f"docker {' '.join(args[:2])}: {(result.stderr or result.stdout).strip()}")
    return result


def answers() -> bool:
    """An engine answers on the CLI's default endpoint (DOCKER_HOST or /var/run/docker.sock)."""
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=15, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def require_engine() -> None:
    if not answers():
        raise EngineError(
            "no Docker engine answers (`docker info` fails): start one (`dockerd`, or `make test-compose`, which "
            "installs Debian's docker.io and starts it for its own run)"
        )


def inspect(*names: str, kind: str = "container") -> list[dict[str, Any]]:
    """`docker inspect` of existing objects (missing ones are left out)."""
    if not names:
        return []
    result = docker(kind, "inspect", *names, check=False)
    if result.returncode != 0 and not result.stdout.strip().startswith("["):
        return []
    found: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return found


def image_labels(image: str) -> dict[str, str] | None:
    """The image's labels, or None when the engine has no image of that name."""
    found = inspect(image, kind="image")
    if not found:
        return None
    labels: dict[str, str] = found[0].get("Config", {}).get("Labels") or {}
    return labels


def image_exists(image: str) -> bool:
    return image_labels(image) is not None
