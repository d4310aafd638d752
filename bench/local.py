"""The local stack as the benchmarks use it: started in-process on 127.0.0.1, quiet, state in a temp dir.

- The gateway path is the stack's HTTP API (`api_url`); the direct path is the same emulator it calls.
- `invoke` runs the handler in-process (`function_pool(name).invoke(event)`), with the API Gateway proxy
  event the local HTTP server would have built: handler time without the local HTTP front.
- Powertools writes one JSON log line per request and EMF metrics to stdout, as on Lambda; the benchmark
  keeps that work but sends it to /dev/null (`quiet_stdout`), so the tables stay readable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from http_client import Body, Target, get_json, post_json

from imagegw_dev.local_stack import ApiRoute, LocalStack, StackConfig, api_routes, to_proxy_event
from imagegw_dev.template import load_template

ROOT = Path(__file__).resolve().parents[1]
# Left open for the life of the process: the Logger's handler may keep it after the redirect ends.
_SINK = open(os.devnull, "w")  # noqa: SIM115


@contextlib.contextmanager
def quiet_stdout() -> Iterator[TextIO]:
    """Everything printed to stdout inside goes to /dev/null; yields the real stdout for the report."""
    real = sys.stdout
    with contextlib.redirect_stdout(_SINK):
        yield real


class BenchStack:
    def __init__(self) -> None:
        self._state_dir = Path(tempfile.mkdtemp(prefix="imagegw-bench-"))
        self.stack = LocalStack(StackConfig(port=0, quiet=True, root=ROOT, state_dir=self._state_dir))
        self._routes: list[ApiRoute] = []
        self._binary_types: list[str] = []

    def start(self) -> BenchStack:
        # Powertools warns once per process when a request published no custom metric: not news here.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.stack.start()
        # The same routes the local API serves, for building proxy events (their pools are not used:
        # invocations go to the stack's own warm containers).
        self._routes, self._binary_types = api_routes(load_template(ROOT / "template.yaml"), ROOT)
        return self

    def stop(self) -> None:
        try:
            self.stack.stop()
        finally:
            shutil.rmtree(self._state_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ targets

    def gateway(self, path: str) -> Target:
        """`path` is the API path after /v1, e.g. /images/generations."""
        return Target(self.stack.api_url + path, self.stack.api_key)

    def direct(self, path: str) -> Target:
        emulator = self.stack.emulator
        return Target(emulator.base_url + "/v1" + path, emulator.api_key)

    # ------------------------------------------------------------------------------------------ in-process

    def event(self, path: str, body: Body) -> tuple[str, dict[str, Any]]:
        """(function name, API Gateway proxy event) for a POST to /v1`path`, as the local API builds it."""
        raw_path = "/v1" + path
        route = next((r for r in self._routes if r.match("POST", raw_path) is not None), None)
        if route is None:
            raise LookupError(f"no route for POST {raw_path} in template.yaml")
        host = self.stack.api_url.split("//", 1)[1].split("/", 1)[0]
        headers = {
            "Host": host,
            "User-Agent": "imagegw-bench",
            "Accept": "application/json",
            "Authorization": f"Bearer {self.stack.api_key}",
            "Content-Type": body.content_type,
            "Content-Length": str(len(body.data)),
        }
        return route.function.name, to_proxy_event(
            "POST", raw_path, headers, body.data, self._binary_types, route
        )

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.stack.function_pool(function).invoke(event)
        return result

    # ------------------------------------------------------------------------------------------ emulator

    def upstream_requests(self) -> list[dict[str, Any]]:
        """What the emulator received (its documented control endpoint)."""
        answer = get_json(self.stack.emulator.base_url + "/_emulator/requests")
        return list(answer.get("requests", []) if isinstance(answer, dict) else answer)

    def reset_emulator(self) -> None:
        post_json(self.stack.emulator.base_url + "/_emulator/reset", {})
