"""`python -m deploy.compose ARGS`: Docker Compose for `make up/down/logs`, the Docker CLI's plugin when it
has one, else the pinned standalone Compose v2 binary (deploy.validate.COMPOSE). Needs a Docker engine."""

from __future__ import annotations

import os
import sys

from deploy.validate import ROOT, compose_command


def main(argv: list[str]) -> None:
    command = [*compose_command(), "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml"), *argv]
    os.execv(command[0], command)  # noqa: S606 - argv from compose_command(), not from input


if __name__ == "__main__":
    main(sys.argv[1:])
