"""`python -m ccsm_auth`: serve until SIGTERM/SIGINT."""

from ccsm_auth.app import create_app
from ccsm_core.routing import AUTH
from ccsm_core.server import run_service

if __name__ == "__main__":
    run_service(AUTH, create_app, ws=False)
