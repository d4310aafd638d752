"""Shared test set-up: every test runs with fake AWS credentials and no endpoint outside 127.0.0.1."""

import ipaddress
import os
import socket

import pytest

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "imagegw",
}


@pytest.fixture(autouse=True, scope="session")
def _fake_aws_environment():
    """No test may reach real AWS: fake credentials, no profile, no ambient endpoint override."""
    saved = {k: os.environ.get(k) for k in [*FAKE_AWS, "AWS_PROFILE", "AWS_ENDPOINT_URL"]}
    os.environ.update(FAKE_AWS)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials for one test, and no AWS_PROFILE or AWS_ENDPOINT_URL: the in-process local stack
    (tests/integration/conftest.py) sets AWS_ENDPOINT_URL for the whole session, so it is removed here
    for each test that talks to moto directly, and restored after it."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and other families: not the network
    host = str(address[0]).split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _only_loopback_connections():
    """A stray connection is impossible: any connect to an address that is not loopback fails the test
    (an SSRF filter that lets an address through fails here, instead of sending traffic off the machine).
    Subprocesses (the e2e local stack) are not covered; their upstreams and endpoints are 127.0.0.1."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def refuse(address: object) -> None:
        raise AssertionError(f"a test tried to connect to {address!r}, which is not loopback")

    def connect(self: socket.socket, address: object) -> None:
        if not _is_loopback(address):
            refuse(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not _is_loopback(address):
            refuse(address)
        return real_connect_ex(self, address)

    def create_connection(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        if not _is_loopback(address) and not _resolves_to_loopback(address):
            refuse(address)
        return real_create_connection(address, *args, **kwargs)  # type: ignore[arg-type]

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex  # type: ignore[method-assign]
    socket.create_connection = create_connection  # type: ignore[assignment]
    yield
    socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex  # type: ignore[method-assign]
    socket.create_connection = real_create_connection


def _resolves_to_loopback(address: tuple[str, int]) -> bool:
    """A host name is let through to `create_connection`, whose own connects are checked one by one."""
    try:
        ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    except ValueError:
        return True
    return False
