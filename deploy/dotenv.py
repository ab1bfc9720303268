"""compose's env file, `.env.compose` (untracked): written from `.env.example` when it is missing, with a fresh
random value for every empty secret (the example keeps them empty on purpose). It is compose's alone: `make run`,
`make migrate` and `make audit` read `.env.<mode>` and `.env` (core/ccsm_core/settings.py), never this file.

`python -m deploy.dotenv` writes it; `make up` does so itself. CCSM_COMPOSE_ENV names another file (the compose
drills use their own, so a developer's stack and secrets are never touched).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE_NAME = ".env.compose"
GENERATED = ("MYSQL_ROOT_PASSWORD", "DB_PASSWORD", "JWT_SECRET")
# The first words of .env.example, so of every file written from it, including the `.env` an earlier `make up`
# wrote (which `make run` then read: NODE_ENV=remotetest and a random DB_PASSWORD broke it).
MARKER = "# compose.yaml's secrets and knobs."
_ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=")


def env_file(root: Path = ROOT) -> Path:
    override = os.environ.get("CCSM_COMPOSE_ENV")
    return Path(override).resolve() if override else root / ENV_FILE_NAME


def fill(example: str) -> str:
    lines = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in GENERATED and not value:
            line = f"{key}={secrets.token_urlsafe(48)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _write_private(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    target.chmod(0o600)


def ensure(target: Path, root: Path = ROOT) -> bool:
    """Write `target` when it is missing; True when it was written (or moved into place)."""
    if target.exists():
        return False
    legacy = root / ".env"
    if target == root / ENV_FILE_NAME and legacy.is_file() and legacy.read_text(encoding="utf-8").startswith(MARKER):
        # Its secrets are the ones the existing database volume was initialised with: keep them, move them.
        legacy.rename(target)
        print(f"moved .env (written by an earlier `make up`; `make run` reads .env) to {ENV_FILE_NAME}")
        return True
    _write_private(target, fill((root / ".env.example").read_text(encoding="utf-8")))
    print(f"wrote {target.name} from .env.example with fresh random secrets (untracked)")
    return True


def read(target: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in target.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            values[match.group(1)] = line[match.end() :]
    return values


def set_values(target: Path, values: Mapping[str, str]) -> None:
    """Set each KEY=value in place (its comment stays above it); keys the file lacks are appended."""
    pending = dict(values)
    lines = []
    for line in target.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) in pending:
            line = f"{match.group(1)}={pending.pop(match.group(1))}"
        lines.append(line)
    lines += [f"{key}={value}" for key, value in pending.items()]
    _write_private(target, "\n".join(lines) + "\n")


def main(root: Path = ROOT) -> int:
    ensure(env_file(root), root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
