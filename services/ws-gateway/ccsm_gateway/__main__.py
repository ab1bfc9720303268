"""`python -m ccsm_gateway`: serve until SIGTERM/SIGINT."""

from ccsm_core.routing import GATEWAY
from ccsm_core.server import run_service
from ccsm_gateway.app import create_app
from ccsm_gateway.transport import DesktopConnection

if __name__ == "__main__":
    run_service(GATEWAY, create_app, ws=DesktopConnection)
