"""The container health check (Dockerfile HEALTHCHECK and the ECS task definition): GET /health on this
container's own PORT. Standard library only: the image carries no curl. Exit 0 healthy, 1 not."""

import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '4000')}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
