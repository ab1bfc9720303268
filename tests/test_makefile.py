"""`make help` lists every documented target of the Makefile (the `## ...` after a rule), and is the default."""

from __future__ import annotations

import re
import subprocess

from tests.harness import ROOT

RULE = re.compile(r"^([a-zA-Z][a-zA-Z0-9_-]*):[^=\n]*?##\s*(.+)$", re.MULTILINE)


def documented_targets() -> dict[str, str]:
    return dict(RULE.findall((ROOT / "Makefile").read_text(encoding="utf-8")))


def make(*args: str) -> str:
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_lists_every_documented_target_with_its_description() -> None:
    targets = documented_targets()
    assert {"run", "test", "help"} <= set(targets)
    listed = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in make("help").splitlines() if line.strip()}
    assert listed == targets


def test_make_without_a_target_prints_the_help() -> None:
    assert make() == make("help")
