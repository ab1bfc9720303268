"""Operations commands: `python -m ccsm_core config audit | config docs | migrate | seed FILE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from ccsm_core import migrations
from ccsm_core.logs import configure_logging
from ccsm_core.settings import ConfigError, env_table_markdown, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccsm_core")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="configuration commands")
    config.add_argument("action", choices=["audit", "docs"])
    config.add_argument("--service", default="backend")
    sub.add_parser("migrate", help="create the database if needed and apply pending migrations")
    seed = sub.add_parser("seed", help="load a SQL fixture into an empty database")
    seed.add_argument("file", type=Path)
    seed.add_argument("--force", action="store_true", help="load even when users exist")
    args = parser.parse_args(argv)

    if args.command == "config" and args.action == "docs":
        # The README's environment table, generated from the Settings fields (no environment is read).
        sys.stdout.write(env_table_markdown())
        return 0
    try:
        settings = load_settings(getattr(args, "service", "backend"))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service, settings.log_level)

    if args.command == "config":
        sys.stdout.write(orjson.dumps(settings.audit(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if args.command == "migrate":
        if migrations.create_database(settings):
            print(f"created database {settings.db_name}")
        for line in migrations.migrate(settings) or ["schema is up to date"]:
            print(line)
        return 0
    if args.command == "seed":
        if not args.force and not migrations.is_empty(settings):
            print("database already has users; not seeding (use --force to load anyway)")
            return 0
        count = migrations.load_script(settings, args.file.read_text(encoding="utf-8"))
        print(f"loaded {args.file} ({count} statements)")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
