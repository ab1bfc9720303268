"""A stand-in for the load balancer in front of the api service, for the deploy tests: the emulator models the ALB's
configuration but forwards nothing. Each request goes to the real service process that plays the tasks of the
revision the api service runs *now* (read from the emulator's ECS API per request), as the ALB's target group
would after a deployment: so a deploy's `/ready` check reaches the new version, and after a rollback the old one."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.aws.conftest import Stack


class Balancer:
    def __init__(self, stack: Stack, targets: dict[str, str]) -> None:
        """`targets`: image tag -> base URL of the process that plays that version's tasks."""
        self.stack = stack
        self.targets = targets
        self.seen: list[str] = []  # the tag each request was forwarded to
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tag = balancer.running_tag()
                balancer.seen.append(tag)
                target = balancer.targets.get(tag)
                if target is None:
                    self._answer(503, b'{"error":"no healthy target"}')  # as the ALB: no target for the revision
                    return
                upstream = httpx.get(target + self.path, timeout=10.0)
                self._answer(upstream.status_code, upstream.content)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def running_tag(self) -> str:
        ecs = self.stack.client("ecs")
        (service,) = ecs.describe_services(
            cluster=self.stack.outputs["ClusterName"], services=[self.stack.outputs["ApiServiceName"]]
        )["services"]
        definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        return str(definition["containerDefinitions"][0]["image"]).rsplit(":", 1)[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
