"""The simulator's HTTP endpoints: /metrics for Prometheus, /config to read and change its
behaviour at run time, /healthz."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from segue_testkit.trafficsim.simulator import Simulator

MAX_BODY_BYTES = 64 * 1024


def make_handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "trafficsim"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scraped every second; the noise would hide the useful lines

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            self._send(status, json.dumps(payload).encode() + b"\n", "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, sim.metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/config":
                self._json(200, sim.snapshot())
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            else:
                self._json(404, {"error": f"no such path {path}"})

        def do_PUT(self) -> None:
            if self.path.split("?", 1)[0] != "/config":
                self._json(404, {"error": f"no such path {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._json(413, {"error": f"the body must be at most {MAX_BODY_BYTES} bytes"})
                return
            try:
                patch = json.loads(self.rfile.read(length) or b"{}")
                self._json(200, sim.update(patch))
            except ValueError as e:  # JSONDecodeError is a ValueError too
                self._json(400, {"error": str(e)})

        do_PATCH = do_PUT

    return Handler
