"""`python -m deploy.dotenv`: write the untracked `.env` for compose from `.env.example` when it is missing,
with a fresh random value for every empty secret (the example keeps them empty on purpose)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("MYSQL_ROOT_PASSWORD", "DB_PASSWORD", "JWT_SECRET")


def fill(example: str) -> str:
    lines = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in GENERATED and not value:
            line = f"{key}={secrets.token_urlsafe(48)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(root: Path = ROOT) -> int:
    target = root / ".env"
    if target.exists():
        return 0
    target.write_text(fill((root / ".env.example").read_text(encoding="utf-8")), encoding="utf-8")
    target.chmod(0o600)
    print(f"wrote {target.name} from .env.example with fresh random secrets (untracked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
