"""Shared test set-up: every test runs with fake AWS credentials and no endpoint outside 127.0.0.1."""

import os

import pytest
from helpers.loopback_site.loopback_guard import install as install_loopback_guard

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


@pytest.fixture(autouse=True, scope="session")
def _only_loopback_connections():
    """A stray connection is impossible: any connect to an address that is not loopback fails the test
    (an SSRF filter that lets an address through fails here, instead of sending traffic off the machine).
    socket.create_connection connects through socket.connect, so it is covered too. The e2e tier's
    local stack gets the same guard at start-up (tests/helpers/loopback_site)."""
    uninstall = install_loopback_guard()
    yield
    uninstall()
