"""The baseline for bench/api_throughput.py: a bare Starlette app under the same uvicorn settings (uvloop,
httptools, no access log) answering every GET with fixed bytes read from the files named on the command line
(`path=file`), on $PORT: no auth, no database, no JSON encoding; what is left is the framework and the server."""

import os
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def endpoint(body: bytes):  # type: ignore[no-untyped-def]
    async def handler(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return handler


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    routes = []
    for spec in sys.argv[1:]:
        path, _, file = spec.partition("=")
        routes.append(Route(path, endpoint(Path(file).read_bytes())))
    app = Starlette(routes=routes)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="info")
