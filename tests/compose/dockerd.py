"""A Docker engine for the drills, on a fresh machine too: the one that answers is used as it is; otherwise Debian's
`docker.io` is installed when missing (as root; anyone else is told how) and `dockerd` is started for this run,
its log in a file, and stopped at the end. Nothing the drills did not start is ever stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy import engine

LOG = Path("/var/log/ccsm-test-compose-dockerd.log")
START_WITHIN_S = 60.0
STOP_WITHIN_S = 60.0


def dockerd_binary() -> str | None:
    return shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.access("/usr/sbin/dockerd", os.X_OK) else None)


def install_docker() -> str:
    if os.geteuid() != 0:
        raise RuntimeError("no Docker engine here: `sudo apt-get install docker.io` and start `dockerd`, then rerun")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"],
    ):
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    found = dockerd_binary()
    if found is None:
        raise RuntimeError("docker.io installed, but there is no dockerd")
    return found


@contextmanager
def running_engine() -> Iterator[str]:
    """Yields how the engine came to be: `running` (found answering), `started` or `installed and started`."""
    if engine.answers():
        yield "running"
        return
    how = "started"
    binary = dockerd_binary()
    if binary is None or shutil.which("docker") is None:
        binary = install_docker()
        how = "installed and started"
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("ab") as log:
        proc = subprocess.Popen([binary], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_WITHIN_S
        while not engine.answers():
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {proc.returncode} at start; see {LOG}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {START_WITHIN_S:.0f} s; see {LOG}")
            time.sleep(0.2)  # polling the engine's socket, bounded by the deadline
        yield how
    finally:
        # dockerd stops its containers and the containerd it started itself, then exits.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
