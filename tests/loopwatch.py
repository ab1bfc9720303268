"""`python -m tests.loopwatch`: the whole service set (the dev server's app: every route of every service, every
lifespan) under the services' own uvicorn server, with every event-loop callback timed.

Each callback the loop runs (a task step, an I/O callback, a timer) is measured in the loop thread's CPU time,
which is what a handler that never yields spends and what other processes on a loaded machine do not inflate,
and in wall time. The worst one is kept per request label: the `x-loopwatch-label` header of the request whose
task ran it. `GET /__loopwatch` answers `{label: {"cpuMs", "wallMs"}}` since the previous call and starts over.

It runs on asyncio's own loop instead of uvloop because only its Python `Handle` can be timed; the handlers'
code, which is what blocks, is the same on both.
"""

from __future__ import annotations

import contextvars
import threading
import time
from asyncio import events
from typing import Any

import orjson

import devserver
from ccsm_core.logs import configure_logging
from ccsm_core.server import GracefulServer, uvicorn_config
from ccsm_core.settings import load_settings

PATH = "/__loopwatch"
HEADER = b"x-loopwatch-label"
label: contextvars.ContextVar[str] = contextvars.ContextVar("loopwatch_label", default="")


class LoopWatch:
    def __init__(self) -> None:
        self.worst: dict[str, tuple[float, float]] = {}  # label -> (cpu s, wall s) of its longest callback
        self.thread = threading.get_ident()

    def install(self) -> None:
        run = events.Handle._run
        watch = self

        def timed(handle: events.Handle) -> None:
            if threading.get_ident() != watch.thread:
                return run(handle)
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return run(handle)
            finally:
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                name = handle._context.get(label, "")  # type: ignore[attr-defined]
                if cpu > watch.worst.get(name, (-1.0, 0.0))[0]:
                    watch.worst[name] = (cpu, wall)

        events.Handle._run = timed  # type: ignore[method-assign]

    def report(self) -> bytes:
        worst, self.worst = self.worst, {}
        return orjson.dumps(
            {name: {"cpuMs": round(c * 1000, 2), "wallMs": round(w * 1000, 2)} for name, (c, w) in worst.items()}
        )


class Watched:
    """The app, plus `GET /__loopwatch`; each request's task carries its label."""

    def __init__(self, app: Any, watch: LoopWatch) -> None:
        self.app = app
        self.watch = watch
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"] == PATH:
                body = self.watch.report()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            for name, value in scope["headers"]:
                if name == HEADER:
                    label.set(value.decode("latin-1"))
        await self.app(scope, receive, send)


def main() -> None:
    settings = load_settings("dev")
    configure_logging("dev", settings.log_level)
    app = devserver.create_app(settings)
    watch = LoopWatch()
    config = uvicorn_config(Watched(app, watch), settings, ws=True)  # type: ignore[arg-type]
    config.loop = "asyncio"
    server = GracefulServer(config, app.state.lifecycle, settings)
    watch.install()
    server.run()


if __name__ == "__main__":
    main()
