"""`python -m deploy.compose COMMAND`: Docker Compose for `make up/down/logs`, with compose's own env file
(.env.compose, deploy/dotenv.py), through the Docker CLI's plugin when it has one, else the pinned standalone
Compose v2 binary (deploy.validate.COMPOSE). Needs a Docker engine.

- `up`: writes .env.compose when missing, makes sure every image the stack starts from is on this machine or
  can be pulled (where none can, says so and points at `make offline-images`), then builds, starts and waits
  until every service is healthy and the one-shot jobs (migrate, seed) have exited 0; then reloads the edge, so
  it reaches services recreated while it kept running.
- `down`: removes the containers with their anonymous volumes, and the network; named volumes (the database)
  stay (`down -v` removes them too).
- `roll SERVICE`: replaces the containers of a service that runs as several behind the edge (the api: `api` and
  `api-b`), one at a time, without failing a request.
- `scale SERVICE N`: runs N containers of a service and reloads the edge so it routes to all of them.
- anything else goes to compose as it is (`logs --follow`, `ps`, `exec api ...`).

Why the rolling replacement works the way it does. nginx (the edge) resolves an upstream's name when it loads
its configuration; 1.22 (Debian's, which the edge tests and the stand-in run) cannot re-resolve it later, and a
resolver with a variable `proxy_pass` would give up upstream keep-alive. A container that starts after the edge
is therefore reached only after a reload, and a reload closes the old workers' idle client connections: a client
that sends on one at that instant gets a reset (3 of 7 drill runs on a loaded machine did, when the replacement
was a new container beside the old one plus two reloads). So the edge is never reloaded during a replacement:
the api runs as two containers at fixed addresses under one upstream name, and each is replaced in place while
the other serves. The old one gets SIGTERM: `/ready` turns 503 and its listener closes, so the edge's next
connection to it is refused and nginx passes the request to the other address (safe for a POST too: nothing was
sent) and, having seen the failure, sends it nothing for `fail_timeout` (10 s); requests on the connections it
keeps alive are answered with `Connection: close` for a second before the idle ones close
(core/ccsm_core/server.py, DrainingHttpProtocol); what it is serving finishes; its exit code is checked; a new
container takes the same address and must get healthy, and the edge's `fail_timeout` must have passed since then
(so no nginx worker still skips it), before the other one is replaced. Like the ECS deployment (minimum 100 %), a
healthy api is always serving.
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
HEALTHY_WITHIN_S = 180.0  # a new container's start period and first checks, with room for a loaded machine
RELOAD_WITHIN_S = 30.0
# nginx keeps an upstream server it saw fail out of rotation for `fail_timeout`, 10 s by default (upstreams.conf
# sets none; tests/deploy checks that), each worker on its own (nginx docs, ngx_http_upstream_module). It
# compares whole seconds (ngx_time()), so the window can last up to a second longer; one more for margin.
EDGE_FAIL_TIMEOUT_S = 10.0
EDGE_SKIPS_FOR_S = EDGE_FAIL_TIMEOUT_S + 2.0


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

    def edge_workers(self) -> set[str]:
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
        before = self.edge_workers()
        self.run("exec", "-T", EDGE, "nginx", "-s", "reload", capture=True)
        deadline = time.monotonic() + RELOAD_WITHIN_S
        while True:
            now = self.edge_workers()
            if now and not now & before:
                return
            if time.monotonic() > deadline:
                raise StackError(f"the edge's workers were not replaced within {RELOAD_WITHIN_S:.0f} s")
            time.sleep(0.1)  # polling the edge's process table, bounded by the deadline

    def replicas(self, service: str) -> list[str]:
        """The compose services whose containers answer to `service`'s name on the network: itself and those that
        carry it as an alias (api: api, api-b)."""
        services = self.config()["services"]
        return [
            name
            for name, svc in services.items()
            if name == service or service in ((svc.get("networks") or {}).get("backend") or {}).get("aliases", [])
        ]

    def roll(self, service: str, log: Any = print) -> list[dict[str, Any]]:
        """Replace each container of `service`'s replicas in place, one at a time. Returns what happened to each."""
        if service not in SERVICES:
            raise StackError(f"only the app services roll ({', '.join(SERVICES)}); {service} is not one")
        group = self.replicas(service)
        if len(group) < 2:
            raise StackError(f"{service} runs as one container: nothing would serve while it is replaced (make up)")
        services = self.config()["services"]
        report = []
        for name in group:
            others = [cid for other in group if other != name for cid in self.container_ids(other)]
            self.wait_healthy(others)  # never take one away unless the others serve
            (old_id,) = self.container_ids(name)
            grace_s = duration_s(services[name].get("stop_grace_period", "10s"))
            started = time.monotonic()
            engine.docker("stop", "--time", str(int(grace_s)), old_id, timeout=grace_s + 30)
            drained_s = time.monotonic() - started
            (state,) = [c["State"] for c in engine.inspect(old_id)]
            if state["ExitCode"] != 0:
                raise StackError(f"{name} {old_id[:12]} exited {state['ExitCode']} while draining")
            self.run("up", "--detach", "--no-deps", "--force-recreate", name, capture=True)
            (new_id,) = self.container_ids(name)
            self.wait_healthy([new_id])
            healthy_at = time.monotonic()
            if name != group[-1]:
                # The edge refused this address while it drained and until the new process listened, so some
                # worker may still skip it; were the next replica taken away now, that worker would have no live
                # upstream (502). Every such failure happened before the new container was healthy, so this wait
                # outlasts every worker's window.
                time.sleep(max(0.0, healthy_at + EDGE_SKIPS_FOR_S - time.monotonic()))
            entry = {
                "service": name,
                "old": old_id[:12],
                "new": new_id[:12],
                "old_exit_code": state["ExitCode"],
                "old_drain_s": round(drained_s, 1),
                "new_healthy_s": round(healthy_at - started - drained_s, 1),
                "total_s": round(time.monotonic() - started, 1),
                "timeline": {"stop": started, "exited": started + drained_s, "healthy": healthy_at},
            }
            log(
                f"{name}: {entry['old']} drained in {entry['old_drain_s']} s (exit 0), {entry['new']} healthy "
                f"{entry['new_healthy_s']} s later"
            )
            report.append(entry)
        return report

    def scale(self, service: str, count: int) -> list[str]:
        """Run `count` containers of `service`, wait until they are healthy, then reload the edge so its upstream
        name resolves to all of them. Returns their ids."""
        self.run("up", "--detach", "--no-deps", "--no-recreate", "--scale", f"{service}={count}", service, capture=True)
        ids = self.container_ids(service)
        self.wait_healthy(ids)
        self.reload_edge()
        return ids

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
    # A service recreated under a running edge (new image or settings) has a new address, which nginx learns only
    # when it loads its configuration again (before this, the next login through the edge was a 502).
    stack.reload_edge()
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
        if command == "scale":
            if len(rest) != 2 or not rest[1].isdigit() or int(rest[1]) < 1:
                print("usage: python -m deploy.compose scale SERVICE COUNT", file=sys.stderr)
                return 2
            print(" ".join(i[:12] for i in stack.scale(rest[0], int(rest[1]))))
            return 0
    except (StackError, engine.EngineError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    command_line = stack.argv(*argv)
    os.execve(command_line[0], command_line, compose_environment())  # noqa: S606 - argv from Stack.argv()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
