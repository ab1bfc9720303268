"""The api service exactly as `python -m ccsm_api` runs it (the benchmarks turn its caches off with the
environment, `RESPONSE_CACHE=false`, as an operator would)."""

from ccsm_api.app import create_app
from ccsm_core.routing import API
from ccsm_core.server import run_service

if __name__ == "__main__":
    run_service(API, create_app, ws=False)
