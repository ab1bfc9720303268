"""`make offline-images`: stand-ins for the official images, for machines where no container registry answers.

1. `ccsm-offline/debian:bookworm`: a Debian bookworm root filesystem made by `mmdebstrap --variant=minbase` from
   the machine's configured Debian mirror (apt's index targets of origin Debian), with the host's CA bundle and
   extra CAs (package downloads inside a build go through the same TLS inspection as the host's), imported with
   `docker import`.
2. From it, with Debian's packages, one stand-in per image variable of compose.yaml (`STAND_INS`), built by the
   pinned Compose binary (BuildKit): python (3.11), MariaDB for mysql, redis-server, nginx; and uv's own binary
   from its PyPI wheel in a `FROM scratch` image.
3. Their names are written into the compose env file (.env.compose), so `make up` uses them from then on.

Stand-ins carry the project's own names (ccsm-offline/*) and are never tagged with an official one: a later
`make up` where a registry answers would otherwise run a fake mysql:8.4 without a word.

Idempotent: an image is rebuilt only when the digest of its inputs (recorded in its label) changed; `--refresh`
rebuilds everything from the mirror (new point releases and security fixes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploy import dotenv, engine
from deploy.validate import ROOT, compose_binary, tool

HERE = Path(__file__).resolve().parent
PREFIX = "ccsm-offline/"
SUITE = "bookworm"
BASE = f"{PREFIX}debian:{SUITE}"
INPUTS_LABEL = "org.ccsm.offline.inputs"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
# Where the machine's apt configuration names no Debian mirror.
DEFAULT_MIRRORS = {"Debian": "http://deb.debian.org/debian", "Debian-Security": "http://deb.debian.org/debian-security"}
_DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*_IMAGE):-([^}]+)\}")


@dataclass(frozen=True)
class StandIn:
    variable: str  # compose.yaml's variable that names the image (and the Dockerfile's ARG, for base images)
    repository: str
    tag: str | None  # None: the official image's own tag (uv: the same binary at the same version)
    dockerfile: str

    def image(self, official: str) -> str:
        return f"{self.repository}:{self.tag or official.rpartition(':')[2]}"


STAND_INS = (
    StandIn("PYTHON_IMAGE", f"{PREFIX}python", "3.11", "python.Dockerfile"),
    StandIn("UV_IMAGE", f"{PREFIX}uv", None, "uv.Dockerfile"),
    StandIn("MYSQL_IMAGE", f"{PREFIX}mariadb", "10.11", "mariadb.Dockerfile"),
    StandIn("REDIS_IMAGE", f"{PREFIX}redis", "7.0", "redis.Dockerfile"),
    StandIn("NGINX_IMAGE", f"{PREFIX}nginx", "1.22", "nginx.Dockerfile"),
)


def official_images(compose_file: Path = ROOT / "compose.yaml") -> dict[str, str]:
    """Image variable -> its default, the official image, as compose.yaml spells it (`${MYSQL_IMAGE:-mysql:8.4}`)."""
    found: dict[str, str] = {}
    for name, default in _DEFAULT.findall(compose_file.read_text(encoding="utf-8")):
        if found.setdefault(name, default) != default:
            raise ValueError(f"compose.yaml gives {name} two defaults: {found[name]} and {default}")
    return found


def stand_in_images() -> dict[str, str]:
    """Image variable -> the stand-in's name."""
    official = official_images()
    return {s.variable: s.image(official[s.variable]) for s in STAND_INS}


def debian_sources() -> list[str]:
    """sources.list lines for bookworm from the machine's configured Debian mirrors."""
    mirrors = dict(DEFAULT_MIRRORS)
    apt = shutil.which("apt-get")
    if apt:
        listed = subprocess.run(  # noqa: S603 - fixed argv
            [apt, "indextargets", "--format", "$(LABEL) $(REPO_URI)", "Created-By: Packages", "Origin: Debian"],
            capture_output=True,
            text=True,
        )
        configured: dict[str, str] = {}
        for line in listed.stdout.splitlines():
            label, _, uri = line.partition(" ")
            configured.setdefault(label, uri.rstrip("/"))
        mirrors.update({k: v for k, v in configured.items() if k in mirrors})
    main, security = mirrors["Debian"], mirrors["Debian-Security"]
    return [
        f"deb {main} {SUITE} main",
        f"deb {main} {SUITE}-updates main",
        f"deb {security} {SUITE}-security main",
    ]


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:32]


def _host_cas() -> list[Path]:
    extra = sorted(p for p in HOST_EXTRA_CAS.rglob("*") if p.is_file()) if HOST_EXTRA_CAS.is_dir() else []
    return [HOST_CA_BUNDLE, *extra]


def mmdebstrap_argv(sources: list[str]) -> list[str]:
    hooks = [
        'mkdir -p "$1/etc/ssl/certs" "$1/usr/local/share/ca-certificates"',
        f"upload {HOST_CA_BUNDLE} /etc/ssl/certs/ca-certificates.crt",
        # Kept beside the bundle, so a package that runs update-ca-certificates later rebuilds it with them.
        *([f"sync-in {HOST_EXTRA_CAS} /usr/local/share/ca-certificates"] if HOST_EXTRA_CAS.is_dir() else []),
        # No service starts while a package installs during a build (Debian's own container images do the same).
        'printf \'#!/bin/sh\\nexit 101\\n\' > "$1/usr/sbin/policy-rc.d" && chmod 0755 "$1/usr/sbin/policy-rc.d"',
    ]
    return [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        "--format=tar",
        '--aptopt=APT::Install-Recommends "false"',
        '--aptopt=Acquire::Retries "3"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        *(f"--customize-hook={hook}" for hook in hooks),
        SUITE,
        "-",
        *sources,
    ]


def _ensure_mmdebstrap() -> str:
    found = shutil.which("mmdebstrap")
    if found:
        return found
    if os.geteuid() != 0:
        raise engine.EngineError("mmdebstrap is missing: `sudo apt-get install mmdebstrap`, then run this again")
    print("installing Debian's mmdebstrap", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"],
    ):
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)  # noqa: S603 - fixed argv
    return shutil.which("mmdebstrap") or "mmdebstrap"


def build_base(refresh: bool) -> str:
    """The imported root filesystem; kept when its inputs are unchanged. Returns its image id."""
    sources = debian_sources()
    argv = mmdebstrap_argv(sources)
    digest = _digest(*argv, *(p.read_bytes() for p in _host_cas()))
    labels = engine.image_labels(BASE)
    if not refresh and labels is not None and labels.get(INPUTS_LABEL) == digest:
        print(f"{BASE}: up to date")
    else:
        started = time.monotonic()
        print(f"{BASE}: mmdebstrap from {sources[0].split()[1]} ...", flush=True)
        argv[0] = _ensure_mmdebstrap()
        changes = [f"LABEL {INPUTS_LABEL}={digest}", "ENV LANG=C.UTF-8", 'CMD ["bash"]']
        rootfs = subprocess.Popen(argv, stdout=subprocess.PIPE)  # noqa: S603 - argv built above
        assert rootfs.stdout is not None
        imported = subprocess.run(  # noqa: S603 - the docker CLI, fixed arguments
            [engine.docker_binary(), "import", *(a for c in changes for a in ("--change", c)), "-", BASE],
            stdin=rootfs.stdout,
            capture_output=True,
            text=True,
        )
        rootfs.stdout.close()
        if rootfs.wait() != 0 or imported.returncode != 0:
            raise engine.EngineError(f"building {BASE} failed: mmdebstrap exit {rootfs.returncode}; {imported.stderr}")
        print(f"{BASE}: imported in {time.monotonic() - started:.0f} s")
    image_id: str = engine.inspect(BASE, kind="image")[0]["Id"]
    return image_id


def uv_wheel_bin(version: str) -> Path:
    """The bin directory of uv's PyPI wheel at `version` (uv and uvx), through `uv tool run` like the validators."""
    out = subprocess.run(  # noqa: S603 - pinned tool, fixed arguments
        tool(f"uv=={version}", "python", "-c", "import uv; print(uv.find_uv_bin())"),
        check=True,
        capture_output=True,
        text=True,
    )
    binary = Path(out.stdout.strip())
    if not (binary.is_file() and (binary.parent / "uvx").is_file()):
        raise FileNotFoundError(f"uv {version}'s wheel has no uv/uvx at {binary.parent}")
    return binary.parent


def build_document(base_id: str, uv_bin: Path) -> dict[str, object]:
    """The compose project that builds every stand-in (passed on stdin; services are only built, never run)."""
    official = official_images()
    files = sorted(p for p in HERE.iterdir() if p.is_file() and p.suffix != ".py")
    inputs = _digest(
        base_id, *(f"{p.name}\0{p.read_text(encoding='utf-8')}" for p in files), *stand_in_images().values()
    )
    services: dict[str, object] = {}
    for s in STAND_INS:
        # The engine's BuildKit may predate named build contexts: uv's context is the wheel's bin directory itself.
        context = uv_bin if s.variable == "UV_IMAGE" else HERE
        build: dict[str, object] = {
            "context": str(context),
            "dockerfile": str(HERE / s.dockerfile),
            "labels": {
                INPUTS_LABEL: inputs,
                "org.opencontainers.image.description": f"stand-in for {official[s.variable]} (make offline-images)",
            },
        }
        services[s.variable.lower().removesuffix("_image")] = {"image": s.image(official[s.variable]), "build": build}
    return {"name": "ccsm-offline", "services": services}


def up_to_date(document: dict[str, object]) -> bool:
    services = document["services"]
    assert isinstance(services, dict)
    for service in services.values():
        labels = engine.image_labels(service["image"])
        if labels is None or labels.get(INPUTS_LABEL) != service["build"]["labels"][INPUTS_LABEL]:
            return False
    return True


def build_stand_ins(base_id: str, refresh: bool) -> None:
    official = official_images()
    uv_bin = uv_wheel_bin(official["UV_IMAGE"].rpartition(":")[2])
    document = build_document(base_id, uv_bin)
    names = ", ".join(stand_in_images().values())
    if not refresh and up_to_date(document):
        print(f"stand-ins up to date: {names}")
        return
    started = time.monotonic()
    print(f"building {names} ...", flush=True)
    argv = [
        compose_binary(),
        "--project-directory",
        str(HERE),
        "-f",
        "-",
        "build",
        *(["--no-cache"] if refresh else []),
    ]
    env = {"COMPOSE_BAKE": "false", **os.environ}  # no buildx plugin here: the engine's own BuildKit, quietly
    built = subprocess.run(argv, input=json.dumps(document), text=True, env=env)  # noqa: S603 - pinned binary
    if built.returncode != 0:
        raise engine.EngineError(f"building the stand-ins failed (compose build exit {built.returncode})")
    print(f"stand-ins built in {time.monotonic() - started:.0f} s")


def use_stand_ins(env_file: Path) -> None:
    """Point compose at the stand-ins: their names into the env file (written first when missing)."""
    dotenv.ensure(env_file)
    chosen = stand_in_images()
    dotenv.set_values(env_file, chosen)
    print(f"{env_file.name}: " + " ".join(f"{k}={v}" for k, v in chosen.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.offline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--refresh", action="store_true", help="rebuild everything from the Debian mirror")
    args = parser.parse_args(argv)
    try:
        engine.require_engine()
        started = time.monotonic()
        base_id = build_base(args.refresh)
        build_stand_ins(base_id, args.refresh)
        use_stand_ins(dotenv.env_file())
    except (engine.EngineError, subprocess.CalledProcessError, FileNotFoundError) as exc:
        print(f"make offline-images: {exc}", file=sys.stderr)
        return 1
    print(f"offline images ready in {time.monotonic() - started:.0f} s; `make up` uses them")
    return 0
