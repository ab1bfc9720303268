"""`python -m deploy.compose COMMAND`: Docker Compose for `make up/down/logs`, with compose's own env file
(.env.compose, deploy/dotenv.py), through the Docker CLI's plugin when it has one, else the pinned standalone
Compose v2 binary (deploy.validate.COMPOSE). Needs a Docker engine.

- `up`: writes .env.compose when missing, makes sure every image the stack starts from is on this machine or
  can be pulled (where none can, says so and points at `make offline-images`), then builds, starts and waits
  until every service is healthy and the one-shot jobs (migrate, seed) have exited 0.
- `down`: removes the containers with their anonymous volumes, and the network; named volumes (the database)
  stay (`down -v` removes them too).
- `roll SERVICE`: replaces each container of an app service without failing a request (start new, stop old).
- anything else goes to compose as it is (`logs --follow`, `ps`, `exec api ...`).

The rolling replacement mirrors the ECS deployment (minimum 100 %, maximum 200 %): a new container starts beside
the old one and must be healthy first; the edge is reloaded, so its upstream name resolves to both; the old one
gets SIGTERM, closes its listener at once (nginx passes a refused connection to the other address, even for a
POST, since nothing was sent) and finishes what it is serving; once it has exited (the exit code is checked) it
is removed and the edge reloaded again, forgetting its address. nginx re-resolves upstream names only when its
configuration is loaded, and a reload is graceful (old workers finish their requests), which is why this is
done with reloads rather than with a resolver: nginx 1.22 (Debian's, the edge tests' and the stand-in's) cannot
re-resolve an upstream's servers, and a resolver with a variable `proxy_pass` would give up upstream keep-alive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy import dotenv, engine
from deploy.offline import images as offline
from deploy.topology import SERVICES
from deploy.validate import ROOT, compose_command

EDGE = "edge"
EDGE_PORT = 4000  # the port the edge listens on inside its container (compose.yaml publishes it on EDGE_PORT)
HEALTHY_WITHIN_S = 180.0  # a new container's start period and first checks (the image's HEALTHCHECK: 20 s + 3 x 15 s)
RELOAD_WITHIN_S = 30.0


class StackError(RuntimeError):
    pass


def duration_s(duration: str) -> float:
    """A compose duration as `config --format json` prints it (`35s`, `1m30s`) or nanoseconds."""
    if duration.isdigit():
        return int(duration) / 1e9
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    i = 0
    while i < len(duration):
        ch = duration[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if duration.startswith("ms", i) else ch
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    return total


def compose_environment() -> dict[str, str]:
    # Compose 2.40 builds through buildx bake when asked to; without the buildx plugin it says so on every build.
    return {"COMPOSE_BAKE": "false", **os.environ}


@dataclass
class Stack:
    """One compose project: this repository's compose.yaml with an env file (and COMPOSE_PROJECT_NAME, when set)."""

    root: Path = ROOT
    env_file: Path = field(default_factory=dotenv.env_file)

    def argv(self, *args: str) -> list[str]:
        return [
            *compose_command(),
            *("--project-directory", str(self.root), "--env-file", str(self.env_file)),
            *("-f", str(self.root / "compose.yaml")),
            *args,
        ]

    def run(self, *args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
        dotenv.ensure(self.env_file)  # compose will not read compose.yaml while its required secrets are unset
        result = subprocess.run(  # noqa: S603 - argv from argv()
            self.argv(*args), capture_output=capture, text=True, env=compose_environment()
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip() if capture else ""
            raise StackError(f"compose {' '.join(args)} failed (exit {result.returncode}) {detail}".strip())
        return result

    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.run("config", "--format", "json", capture=True).stdout)
        return loaded

    def images_needed(self) -> list[str]:
        """Every image the stack starts or builds from: the services' own (where not built) and the build args'."""
        needed: list[str] = []
        for service in self.config()["services"].values():
            build = service.get("build")
            if build:
                needed += [v for k, v in (build.get("args") or {}).items() if k.endswith("_IMAGE") and v]
            elif service.get("image"):
                needed.append(service["image"])
        return list(dict.fromkeys(needed))

    def container_ids(self, service: str, include_stopped: bool = False) -> list[str]:
        out = self.run("ps", "--quiet", *(["--all"] if include_stopped else []), service, capture=True).stdout
        return out.split()

    def wait_healthy(self, ids: list[str], within_s: float = HEALTHY_WITHIN_S) -> None:
        """Poll `docker inspect` until every container is healthy; fail at once when one exits or turns unhealthy."""
        deadline = time.monotonic() + within_s
        while True:
            states = [c["State"] for c in engine.inspect(*ids)]
            if len(states) != len(ids):
                raise StackError("a container disappeared while starting")
            health = [s.get("Health", {}).get("Status", "none" if s["Running"] else "exited") for s in states]
            if all(h == "healthy" for h in health):
                return
            if any(h in ("unhealthy", "exited") or not s["Running"] for h, s in zip(health, states, strict=True)):
                raise StackError(f"a new container did not get healthy: {health}")
            if time.monotonic() > deadline:
                raise StackError(f"not healthy within {within_s:.0f} s: {health}")
            time.sleep(0.5)  # polling the engine, each pass bounded by the deadline

    def _edge_workers(self) -> set[str]:
        """PIDs of the edge's nginx workers that take new connections (not those finishing after a reload)."""
        script = (
            'for d in /proc/[0-9]*; do c=$(tr "\\0" " " < "$d/cmdline" 2>/dev/null) || continue; '
            'case "$c" in "nginx: worker process is shutting down"*) ;; "nginx: worker process"*) echo "${d#/proc/}";; '
            "esac; done"
        )
        return set(self.run("exec", "-T", EDGE, "sh", "-c", script, capture=True).stdout.split())

    def reload_edge(self) -> None:
        """Reload nginx (it resolves upstream names again) and return once new workers have taken over."""
        self.run("exec", "-T", EDGE, "nginx", "-t", "-q", capture=True)
        before = self._edge_workers()
        self.run("exec", "-T", EDGE, "nginx", "-s", "reload", capture=True)
        deadline = time.monotonic() + RELOAD_WITHIN_S
        while True:
            now = self._edge_workers()
            if now and not now & before:
                return
            if time.monotonic() > deadline:
                raise StackError(f"the edge's workers were not replaced within {RELOAD_WITHIN_S:.0f} s")
            time.sleep(0.1)  # polling the edge's process table, bounded by the deadline

    def roll(self, service: str, log: Any = print) -> list[dict[str, Any]]:
        """Replace every container of `service`, one at a time. Returns, per old container, what happened."""
        if service not in SERVICES:
            raise StackError(f"only the app services roll ({', '.join(SERVICES)}); {service} is not one")
        grace_s = duration_s(self.config()["services"][service].get("stop_grace_period", "10s"))
        old = self.container_ids(service)
        if not old:
            raise StackError(f"{service} has no running container: `make up` first")
        report = []
        for old_id in old:
            started = time.monotonic()
            current = self.container_ids(service)
            self.run(
                "up", "--detach", "--no-deps", "--no-recreate", "--scale", f"{service}={len(current) + 1}", service
            )
            (new_id,) = set(self.container_ids(service)) - set(current)
            self.wait_healthy([new_id])
            healthy_s = time.monotonic() - started
            self.reload_edge()
            stopping = time.monotonic()
            engine.docker("stop", "--time", str(int(grace_s)), old_id, timeout=grace_s + 30)
            stopped_s = time.monotonic() - stopping
            (state,) = [c["State"] for c in engine.inspect(old_id)]
            engine.docker("rm", old_id)
            self.reload_edge()
            entry = {
                "old": old_id[:12],
                "new": new_id[:12],
                "new_healthy_s": round(healthy_s, 1),
                "old_exit_code": state["ExitCode"],
                "old_drain_s": round(stopped_s, 1),
                "total_s": round(time.monotonic() - started, 1),
            }
            log(f"{service}: {entry['old']} replaced by {entry['new']} ({entry})")
            report.append(entry)
            if state["ExitCode"] != 0:
                raise StackError(f"{service} {old_id[:12]} exited {state['ExitCode']} while draining")
        return report

    def edge_url(self) -> str:
        address = self.run("port", EDGE, str(EDGE_PORT), capture=True).stdout.strip()
        return f"http://{address}"


def missing_images(stack: Stack) -> list[tuple[str, str]]:
    """(image, why) for each image that is neither on this machine nor pullable now."""
    missing = []
    for image in stack.images_needed():
        if engine.image_exists(image):
            continue
        if image.startswith(offline.PREFIX):
            missing.append((image, "a stand-in that `make offline-images` builds"))
            continue
        print(f"pulling {image}", flush=True)
        pulled = engine.docker("pull", "--quiet", image, timeout=900, check=False)
        if pulled.returncode != 0:
            missing.append((image, (pulled.stderr or pulled.stdout).strip().splitlines()[-1:][0]))
    return missing


def up(stack: Stack, extra: list[str]) -> int:
    engine.require_engine()
    missing = missing_images(stack)
    if missing:
        for image, why in missing:
            print(f"make up: {image} is not on this machine and cannot be pulled: {why}", file=sys.stderr)
        print(
            "make up: where no container registry answers, `make offline-images` builds stand-ins from Debian's "
            f"packages and names them in {stack.env_file.name}; then run `make up` again.",
            file=sys.stderr,
        )
        return 1
    result = stack.run("up", "--detach", "--build", "--wait", *extra, check=False)
    if result.returncode != 0:
        print("make up: the stack did not get healthy; `make logs` shows why", file=sys.stderr)
        return result.returncode
    print(f"the backend answers on {stack.edge_url()} (make smoke BASE_URL=..., make logs, make down)")
    return 0


def down(stack: Stack, extra: list[str]) -> int:
    # `down` alone keeps anonymous volumes; `rm --volumes` removes them with their containers first.
    stack.run("rm", "--stop", "--force", "--volumes")
    return stack.run("down", "--remove-orphans", *extra, check=False).returncode


def main(argv: list[str]) -> int:
    stack = Stack()
    if not argv:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    dotenv.ensure(stack.env_file)  # compose will not read compose.yaml while its required secrets are unset
    try:
        if command == "up":
            return up(stack, rest)
        if command == "down":
            return down(stack, rest)
        if command == "roll":
            if len(rest) != 1:
                print("usage: python -m deploy.compose roll SERVICE", file=sys.stderr)
                return 2
            stack.roll(rest[0])
            return 0
    except (StackError, engine.EngineError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    command_line = stack.argv(*argv)
    os.execve(command_line[0], command_line, compose_environment())  # noqa: S606 - argv from Stack.argv()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
