"""The api service exactly as `python -m ccsm_api` runs it; `--uncached` turns the bootstrap cache (and its
single flight) off, which is the old backend's behaviour: one full database pass per request."""

import sys

import ccsm_api.bootstrap as bootstrap

if "--uncached" in sys.argv:
    bootstrap.DEFAULT_ENABLED = False

from ccsm_api.app import create_app
from ccsm_core.routing import API
from ccsm_core.server import run_service

if __name__ == "__main__":
    run_service(API, create_app, ws=False)
