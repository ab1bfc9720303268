"""A service built like the real ones, plus a slow endpoint, for shutdown tests: `python -m tests.core.slow_service`.

`GET /slow?ms=N` logs "slow request started", works for N ms, then answers with what /ready says at its end.
`POST /echo` reads the whole body and answers its length.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from ccsm_core import service
from ccsm_core.codec import json_response
from ccsm_core.server import run_service
from ccsm_core.settings import Settings

log = logging.getLogger("slow")


async def slow(request: Request) -> Response:
    ms = int(request.query_params.get("ms", "1000"))
    log.info("slow request started", extra={"ms": ms})
    await asyncio.sleep(ms / 1000)  # the workload being drained, not synchronisation
    status, _ = await request.state.lifecycle.readiness()
    return json_response({"done": True, "readyAtEnd": status})


async def echo(request: Request) -> Response:
    return json_response({"bytes": len(await request.body())})


def create_app(settings: Settings) -> Starlette:
    spec = service.ServiceSpec(
        name="slow", routes=[service.route("/slow", slow), service.route("/echo", echo, ["POST"])]
    )
    return service.build_service_app(spec, settings, startup_lines=["slow service up"])


if __name__ == "__main__":
    run_service("slow", create_app)
