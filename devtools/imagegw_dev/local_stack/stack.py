"""The whole local stack: moto, the upstream (the emulator or a real service), the resources, the API
Gateway front and the SQS event sources, started together and stopped in reverse order."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from imagegw_dev.local_stack.api_gateway import ApiGateway, _HttpHandler, api_routes, gateway_responses
from imagegw_dev.local_stack.functions import FunctionPool
from imagegw_dev.local_stack.resources import REGION, LocalResources, aws_env, create_resources, moto_session
from imagegw_dev.local_stack.sqs_events import SqsEventSource, sqs_subscriptions
from imagegw_dev.template import load_template


def project_root() -> Path:
    """The checkout holding template.yaml: the working directory, else the source tree of this package."""
    for candidate in (Path.cwd(), *Path(__file__).resolve().parents):
        if (candidate / "template.yaml").is_file() and (candidate / "functions").is_dir():
            return candidate
    raise FileNotFoundError("template.yaml not found: run from the imagegw checkout")


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    api_key: str | None = None  # a fixed dev key; a random one when None
    upstream_base_url: str | None = None  # an OpenAI-compatible service instead of the emulator
    upstream_api_key: str | None = None
    quiet: bool = False
    root: Path | None = None
    state_dir: Path | None = None  # where local.json is written (default: <root>/.imagegw)
    extra_env: dict[str, str] = field(default_factory=dict)


class LocalStack:
    """The stack `imagegw dev` runs; `start()` brings it up, `stop()` takes it down in reverse order."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.root = config.root or project_root()
        self.api_key = config.api_key or ("sk-dev-" + secrets.token_urlsafe(24))
        self._stoppers: list[Callable[[], None]] = []
        self.emulator: Any = None
        self.resources: LocalResources | None = None
        self.http: ThreadingHTTPServer | None = None
        self.pools: dict[str, FunctionPool] = {}

    @property
    def api_url(self) -> str:
        assert self.http is not None
        host, port = self.http.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> LocalStack:
        template = load_template(self.root / "template.yaml")
        endpoint = self._start_moto()
        upstream_url, upstream_key = self._start_upstream()

        from imagegw_dev.local_routes import local_routes

        bedrock_url = self.emulator.base_url if self.emulator is not None else None
        routes_doc, credentials = local_routes(upstream_url, upstream_key, bedrock_url)
        self.resources = create_resources(template, endpoint, credentials)
        state_dir = self.config.state_dir or (self.root / ".imagegw")
        state_dir.mkdir(parents=True, exist_ok=True)
        routes_file = state_dir / "routes.local.json"
        routes_file.write_text(json.dumps(routes_doc, indent=2))
        os.environ.update(self.resources.env())
        os.environ["IMAGEGW_ROUTES_SOURCE"] = str(routes_file)
        os.environ.update(self.config.extra_env)

        self._seed_key()
        self._serve_api(template)
        self._start_event_sources(template)
        self._write_state(state_dir)
        return self

    def _start_moto(self) -> str:
        """moto's server on a free port, and this process's boto3 pointed at it; its endpoint URL."""
        from imagegw_dev.local_stack.moto_server import SerializedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-call access log drowns ours
        moto = SerializedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        self._stoppers.append(moto.stop)
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.update(aws_env(endpoint))
        return endpoint

    def _start_upstream(self) -> tuple[str, str]:
        """(base URL, API key) of the upstream: the configured service, else the built-in emulator."""
        if self.config.upstream_base_url:
            return self.config.upstream_base_url, self.config.upstream_api_key or ""
        from imagegw_dev.emulator import Emulator

        upstream_key = "sk-emulator-" + secrets.token_hex(8)
        self.emulator = Emulator(api_key=upstream_key).start()
        self._stoppers.append(self.emulator.stop)
        return self.emulator.base_url + "/v1", upstream_key

    def _serve_api(self, template: dict[str, Any]) -> None:
        """The API Gateway front on the configured host and port, its functions warmed up."""
        routes, binary_types = api_routes(template, self.root)
        gateway = ApiGateway(routes, binary_types, gateway_responses(template), template)
        self.pools = {r.function.name: r.function for r in routes}
        for pool in self.pools.values():
            pool.warm()  # import once up front, as a provisioned container would

        handler = type("Handler", (_HttpHandler,), {"gateway": gateway, "quiet": self.config.quiet})
        self.http = _ApiServer((self.config.host, self.config.port), handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self._stoppers.append(self.http.server_close)
        self._stoppers.append(self.http.shutdown)

    def _start_event_sources(self, template: dict[str, Any]) -> None:
        """Run the functions the template subscribes to SQS queues (the jobs worker) against moto's SQS."""

        assert self.resources is not None
        sqs = moto_session().client("sqs", endpoint_url=self.resources.endpoint_url)
        for subscription in sqs_subscriptions(template, self.root):
            queue_url = self.resources.queues.get(subscription.queue)
            if queue_url is None:
                continue
            subscription.function.warm()
            source = SqsEventSource(sqs, queue_url, subscription, quiet=self.config.quiet).start()
            self._stoppers.append(source.stop)

    def function_pool(self, name: str) -> FunctionPool:
        """The warm containers of one API function, to invoke it with an event directly."""
        return self.pools[name]

    def _seed_key(self) -> None:
        import boto3

        from imagegw.accounts.keys import KeyStore

        assert self.resources is not None
        table = boto3.resource("dynamodb").Table(self.resources.tables["KeysTable"])
        KeyStore(table).import_key(self.api_key, name="local development key", owner="make dev")

    def _write_state(self, state_dir: Path) -> None:
        assert self.resources is not None
        state = {
            "endpoint_url": self.resources.endpoint_url,
            "region": REGION,
            "tables": {
                "keys": self.resources.tables["KeysTable"],
                "usage": self.resources.tables["UsageTable"],
                "jobs": self.resources.tables["JobsTable"],
                "idempotency": self.resources.tables["IdempotencyTable"],
            },
            "bucket": self.resources.bucket,
            "queues": self.resources.queues,
            "api_url": self.api_url,
            "emulator_url": self.emulator.base_url if self.emulator else None,
        }
        # Written whole, then renamed: whoever waits for local.json to appear (tests, the admin CLI) must
        # never read it half-written.
        partial = state_dir / "local.json.partial"
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(state_dir / "local.json")

    def stop(self) -> None:
        while self._stoppers:
            stopper = self._stoppers.pop()
            with contextlib.suppress(Exception):  # best effort on shutdown
                stopper()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ApiServer(ThreadingHTTPServer):
    """The local API's HTTP server. socketserver listens with a backlog of 5, so a burst of clients (the
    SDK with a pool of connections, a load test) has connections reset before the first is accepted."""

    request_queue_size = 128
    daemon_threads = True
