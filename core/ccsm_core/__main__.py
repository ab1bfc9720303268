"""Operations commands: `python -m ccsm_core config audit | config docs | migrate | seed FILE |
authcodes audit | authcodes rotate-short [--apply] [--output FILE]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from ccsm_core import authcodes, migrations
from ccsm_core.logs import configure_logging
from ccsm_core.settings import ConfigError, Settings, env_table_markdown, load_settings


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
    codes = sub.add_parser("authcodes", help="desktop auth codes below AUTHCODE_MIN_LENGTH (issue 12 item 1)")
    codes.add_argument("action", choices=["audit", "rotate-short"])
    codes.add_argument("--apply", action="store_true", help="rotate-short: change the codes (default: a dry run)")
    codes.add_argument("--output", type=Path, help="rotate-short: write the new codes to this new file (0600)")
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
    if args.command == "authcodes":
        return authcodes_command(settings, args.action, args.apply, args.output)
    return 1


def authcodes_command(settings: Settings, action: str, apply: bool, output: Path | None) -> int:
    """`audit`: how many active users have a code below the policy (never the codes). `rotate-short`: list them
    (dry run) or give them new codes (`--apply`), printed once, or written to `--output` (a new 0600 file) when the
    terminal's output is kept somewhere (an ECS task's log, a CI job)."""
    minimum = settings.authcode_min_length
    try:
        if action == "audit":
            if minimum == 0:
                print("authcodes: AUTHCODE_MIN_LENGTH is 0 (no minimum); nothing to check")
                return 0
            count = authcodes.count_short_active_sync(settings)
            advice = "; `make rotate-short-authcodes` gives them new ones" if count else ""
            print(f"authcodes: {count} active user(s) with a code shorter than AUTHCODE_MIN_LENGTH={minimum}{advice}")
            return 0
        if minimum == 0:
            print("authcodes: AUTHCODE_MIN_LENGTH is 0 (no minimum); no code is short")
            return 0
        sink = None
        if apply and output is not None:
            # Opened before anything changes. O_EXCL: never overwrite (or follow a link to) an existing file;
            # 0600: the codes are credentials.
            sink = os.fdopen(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8")
        try:
            result = authcodes.rotate_short(settings, apply)
        except BaseException:
            if sink is not None:
                sink.close()
                output.unlink()  # type: ignore[union-attr]
            raise
    except OSError as exc:
        print(f"authcodes: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database unreachable, a unique-key race with a concurrent edit (run it again)
        print(f"authcodes: not done, nothing changed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    rotated = result.users
    if not result.announced:
        print("authcodes: Redis unreachable: revocations and db-changed not sent (the API learns within 30 s)")
    if not apply:
        for r in rotated:
            print(f"would rotate: id={r.user_id} login={r.login} active={int(r.active)}")
        print(f"authcodes: {len(rotated)} user(s) below AUTHCODE_MIN_LENGTH={minimum}; run with --apply to rotate")
        return 0
    lines = [f"id={r.user_id}\tlogin={r.login}\tactive={int(r.active)}\tcode={r.code}" for r in rotated]
    if sink is not None:
        with sink:
            sink.write("".join(line + "\n" for line in lines))
        print(f"authcodes: {len(rotated)} user(s) rotated; their new codes are in {output} (shown nowhere else)")
    else:
        for line in lines:
            print(line)
        print(f"authcodes: {len(rotated)} user(s) rotated; these codes are shown once and stored nowhere else")
    return 0


if __name__ == "__main__":
    sys.exit(main())
