"""`python -m ccsm_api`: serve until SIGTERM/SIGINT."""

from ccsm_api.app import create_app
from ccsm_core.routing import API
from ccsm_core.server import run_service

if __name__ == "__main__":
    run_service(API, create_app, ws=False)
