"""DynamoDB tables for tests, created from the schemas `template.yaml` declares (not hand copies).

`create_tables(dynamodb, {"KeysTable": "keys", "UsageTable": "usage"})` creates, in a boto3 DynamoDB
resource or client, each listed table of the template under the given name, the way the local stack does
(`imagegw_dev.local_stack.create_table`: key schema, global secondary indexes, TTL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import requests

from imagegw_dev.local_routes import local_routes
from imagegw_dev.local_stack import create_resources, create_table
from imagegw_dev.template import load_template, resources

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"


@cache
def _table_properties() -> dict[str, dict[str, Any]]:
    """{logical id: Properties} of every AWS::DynamoDB::Table in template.yaml (read once)."""
    return resources(load_template(TEMPLATE_PATH), "AWS::DynamoDB::Table")


def create_tables(dynamodb: Any, names: dict[str, str]) -> None:
    """Create the template's tables listed in `names` (logical id -> table name), and only those."""
    client = dynamodb.meta.client if hasattr(dynamodb, "Table") else dynamodb
    declared = _table_properties()
    unknown = sorted(set(names) - set(declared))
    if unknown:
        raise KeyError(f"template.yaml declares no DynamoDB table {unknown}; it has {sorted(declared)}")
    for logical_id, table_name in names.items():
        create_table(client, table_name, declared[logical_id])


def stack_aws(stack: dict[str, Any], service: str, *, resource: bool = False) -> Any:
    """A boto3 client (or resource) for the e2e local stack's moto server, with moto's fake credentials."""
    factory: Any = boto3.resource if resource else boto3.client
    return factory(
        service,
        endpoint_url=stack["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@contextmanager
def running_moto(server: Any) -> Iterator[str]:
    """Start a moto server (built with port 0) and yield its URL. moto's server shares moto's in-process
    state, so it starts from, and leaves, a clean slate."""
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    requests.post(f"{url}/moto-api/reset", timeout=10)
    try:
        yield url
    finally:
        requests.post(f"{url}/moto-api/reset", timeout=10)
        server.stop()


@contextmanager
def deployed_function_env(
    emulator_url: str, upstream_key: str, routes_dir: Path, monkeypatch: Any, *, max_receive_count: int
) -> Iterator[Any]:
    """Fresh moto resources from template.yaml (under mock_aws) and the settings environment a deployed
    function would get, with the shipped routes pointed at the emulator. Yields the local stack's resources.
    One upstream attempt per route (an upstream 500 fails at once, with no backoff)."""
    from moto import mock_aws

    # An in-process local stack (tests/integration/conftest.py) points boto3 at its own moto server.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        routes_doc, credentials = local_routes(emulator_url + "/v1", upstream_key)
        resources = create_resources(load_template(TEMPLATE_PATH), None, credentials)  # type: ignore[arg-type]
        routes_file = routes_dir / "routes.json"
        routes_file.write_text(json.dumps(routes_doc))
        env = {
            **resources.env(),
            "IMAGEGW_ROUTES_SOURCE": str(routes_file),
            "IMAGEGW_MAX_ATTEMPTS": "1",
            "IMAGEGW_JOBS_MAX_RECEIVE_COUNT": str(max_receive_count),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield resources
