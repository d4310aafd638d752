"""Quota and rate limit under real concurrency: threads, each with its own boto3 resource, against moto's
server on 127.0.0.1. 50 concurrent requests against a quota of 10 images admit exactly 10.

moto's server handles requests on many threads without a lock around DynamoDB's conditional updates, so
two racing `ADD ... IF used <= max` can both pass inside moto (seen here: 11 of 100 admitted against a
limit of 10). Real DynamoDB serializes writes to one item. The harness therefore runs moto's server with
one lock around its WSGI app, as the local stack does (imagegw_dev.local_stack.moto_server): requests still
arrive concurrently over HTTP, moto answers them one at a time. That models DynamoDB's per-item guarantee,
and the production code is unchanged.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from helpers.aws import create_tables, running_moto

from imagegw.accounts.admission import Accounts, Outcome
from imagegw.accounts.keys import KeyStore
from imagegw.domain import Caller, ImageRequest
from imagegw.errors import ApiError
from imagegw_dev.local_stack.moto_server import SerializedMotoServer

REGION = "us-east-1"
THREADS = 50


@pytest.fixture
def endpoint(aws_env):
    with running_moto(SerializedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)) as url:
        create_tables(resource(url), {"KeysTable": "keys", "UsageTable": "usage"})
        yield url


_session = None


def resource(endpoint: str):
    """A new resource (and so a new client) each call: boto3 resources are not thread-safe, so every thread
    gets its own. They are created in the main thread from one session, which caches the service model."""
    global _session
    if _session is None:
        _session = boto3.session.Session(region_name=REGION)
    return _session.resource("dynamodb", endpoint_url=endpoint)


def accounts_for(endpoint: str, clock: Callable[[], float] = time.time) -> Accounts:
    dynamodb = resource(endpoint)
    return Accounts(KeyStore(dynamodb.Table("keys"), clock), usage_table=dynamodb.Table("usage"), clock=clock)


def request(n: int = 1) -> ImageRequest:
    return ImageRequest("generations", "dall-e-2", {"prompt": "otter", "n": n, "size": "256x256"})


Work = Callable[[Accounts, Caller, int], str]


def race(endpoint: str, raw_key: str, work: Work, clock: Callable[[], float] = time.time) -> Counter[str]:
    """Run `work` in THREADS threads released together, each with its own Accounts and boto3 resource."""
    prepared = [accounts_for(endpoint, clock) for _ in range(THREADS)]
    callers = [a.authenticate(f"Bearer {raw_key}") for a in prepared]
    start = threading.Barrier(THREADS)

    def run(i: int) -> str:
        start.wait()
        return work(prepared[i], callers[i], i)

    with ThreadPoolExecutor(THREADS) as pool:
        return Counter(pool.map(run, range(THREADS)))


def admit_only(accounts: Accounts, caller: Caller, i: int) -> str:
    try:
        accounts.admit(caller, request(), f"req-{i}")
        return "admitted"
    except ApiError as exc:
        return str(exc.code)


def test_fifty_concurrent_requests_against_a_quota_of_ten_admit_exactly_ten(endpoint):
    new = KeyStore(resource(endpoint).Table("keys")).create("racy", quota_images=10)
    outcomes = race(endpoint, new.raw_key, admit_only)
    assert outcomes == {"admitted": 10, "insufficient_quota": 40}
    item = KeyStore(resource(endpoint).Table("keys")).get(new.key_id)
    assert item["used_images"] == 10


def test_concurrent_refunds_return_every_reserved_image(endpoint):
    new = KeyStore(resource(endpoint).Table("keys")).create("refunds", quota_images=10)

    def admit_then_fail(accounts: Accounts, caller: Caller, i: int) -> str:
        try:
            admission = accounts.admit(caller, request(), f"req-{i}")
        except ApiError as exc:
            return str(exc.code)
        accounts.settle(admission, Outcome(502, 5, None, "upstream_error"))
        return "admitted"

    outcomes = race(endpoint, new.raw_key, admit_then_fail)
    # Refunds run while others still race, so more than 10 may get through, but never more than 10 at once
    # and every one of them is refunded.
    assert outcomes["admitted"] >= 10
    assert outcomes["admitted"] + outcomes["insufficient_quota"] == THREADS
    item = KeyStore(resource(endpoint).Table("keys")).get(new.key_id)
    assert item["used_images"] == 0


def test_concurrent_requests_against_a_rate_limit_admit_exactly_the_limit(endpoint):
    new = KeyStore(resource(endpoint).Table("keys")).create("rpm", rate_limit_per_minute=7)
    minute = int(time.time() // 60) * 60 + 30.0  # one fixed instant: every request in the same window
    outcomes = race(endpoint, new.raw_key, admit_only, clock=lambda: minute)
    assert outcomes == {"admitted": 7, "rate_limit_exceeded": 43}


def test_thirty_concurrent_generations_on_a_ten_image_quota_admit_exactly_ten(endpoint):
    """The whole pipeline (ImageService.handle: bearer key, parse, validate, admit, upstream, settle), 30
    requests at once, each thread with its own service and boto3 resource, on a quota of 10 images."""
    import json

    from imagegw.domain import GeneratedImage, HttpRequest, UpstreamResult
    from imagegw.request.catalog import Catalog
    from imagegw.service import ImageService
    from imagegw.settings import Settings

    settings = Settings("bucket", "keys", "usage", "jobs", "idem", "http://127.0.0.1/queue")
    upstream_calls: list[int] = []

    class Upstream:
        def call(self, request: ImageRequest, *, deadline: float) -> UpstreamResult:
            upstream_calls.append(1)
            return UpstreamResult([GeneratedImage(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)], route="fake")

    new = KeyStore(resource(endpoint).Table("keys")).create("racy pipeline", quota_images=10)
    threads = 30
    services = [
        ImageService(settings, Catalog.load(), accounts_for(endpoint), Upstream(), store=None)  # type: ignore[arg-type]
        for _ in range(threads)
    ]
    body = json.dumps(
        {"model": "dall-e-2", "prompt": "otter", "size": "256x256", "response_format": "b64_json"}
    )
    start = threading.Barrier(threads)

    def run(i: int) -> int:
        http = HttpRequest(
            "POST",
            "/v1/images/generations",
            {"authorization": f"Bearer {new.raw_key}", "content-type": "application/json"},
            body.encode(),
            f"req_{i}",
        )
        start.wait()
        try:
            return services[i].handle("generations", http, lambda: 60_000).status
        except ApiError as exc:
            return exc.status

    with ThreadPoolExecutor(threads) as pool:
        statuses = Counter(pool.map(run, range(threads)))
    assert statuses == {200: 10, 429: 20}
    assert len(upstream_calls) == 10
    item = KeyStore(resource(endpoint).Table("keys")).get(new.key_id)
    assert item["used_images"] == 10 and item["free_images"] == 0
    assert not [name for name in item if name.startswith("hold#")]  # every admission settled
