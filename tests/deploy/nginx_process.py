"""Debian's nginx, run natively with the committed edge config (edge/conf.d/routes.conf) and upstreams pointed at
locally started processes. The only differences from compose: the listen port, the upstream addresses, an
`X-Upstream` response header (test-only, at the http level) naming the address that answered, and the lines a test
replaces on purpose (`replace`: a shorter upstream timeout to provoke nginx's 504)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from deploy import nginx
from tests.harness import ROOT, free_port

ROUTES = ROOT / "edge" / "conf.d" / "routes.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        raise RuntimeError("nginx is not installed: run `make system-deps` (Debian's nginx-light)")
    return found


def write_config(
    workdir: Path, addresses: Mapping[str, str | Sequence[str]], port: int, replace: Mapping[str, str] | None = None
) -> Path:
    routes = ROUTES.read_text(encoding="utf-8")
    listen = f"    listen {nginx.EDGE_PORT};\n"
    for old, new in {listen: f"    listen 127.0.0.1:{port};\n", **(replace or {})}.items():
        assert routes.count(old) == 1, f"routes.conf must have exactly one {old.strip()!r}"
        routes = routes.replace(old, new)
    (workdir / "routes.conf").write_text(routes, encoding="utf-8")
    (workdir / "upstreams.conf").write_text(nginx.render_upstreams(addresses), encoding="utf-8")
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / temp).mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read this run's private temp dirs
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\n"
        "daemon off;\n"
        f"pid {workdir}/nginx.pid;\n"
        "error_log stderr notice;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {workdir}/access.log;\n"
        + "".join(f"    {t}_temp_path {workdir}/{t};\n" for t in ("fastcgi", "uwsgi", "scgi", "proxy"))
        + f"    client_body_temp_path {workdir}/body;\n"
        "    add_header X-Upstream $upstream_addr always;\n"
        f"    include {workdir}/upstreams.conf;\n"
        f"    include {workdir}/routes.conf;\n"
        "}\n",
        encoding="utf-8",
    )
    return conf


def wait_started(proc: subprocess.Popen[str], timeout: float = 15.0) -> threading.Thread:
    """Read nginx's error log (stderr, level notice) until the master starts its worker: the listening socket
    was bound before that line, so connections are accepted from then on."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"nginx exited ({proc.wait()}): {seen}")
        seen.append(line)
        if "start worker process" in line:
            return reader
    raise TimeoutError(f"nginx did not start within {timeout} s: {seen}")


@contextmanager
def running_nginx(
    workdir: Path, addresses: Mapping[str, str | Sequence[str]], replace: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Start nginx in the foreground; yields its base URL; stops it (SIGQUIT: graceful) afterwards."""
    binary = nginx_binary()
    port = free_port()
    conf = write_config(workdir, addresses, port, replace)
    check = subprocess.run([binary, "-t", "-p", str(workdir), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    reader: threading.Thread | None = None
    try:
        reader = wait_started(proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if reader is not None:
            reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()
