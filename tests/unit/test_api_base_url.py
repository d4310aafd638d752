"""The base of the status URL a job answer points to, from the API Gateway event that submitted it."""

import pytest

from imagegw.api import base_url_of


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {
                "path": "/v1/images/generations",
                "requestContext": {"path": "/api/v1/images/generations"},
                "headers": {"host": "abc.execute-api.us-east-1.amazonaws.com", "x-forwarded-proto": "https"},
            },
            "https://abc.execute-api.us-east-1.amazonaws.com/api",
        ),
        (
            {
                "path": "/v1/images/generations",
                "requestContext": {"path": "/v1/images/generations"},
                "headers": {"host": "images.example.com", "x-forwarded-proto": "https"},
            },
            "https://images.example.com",
        ),
        (
            {
                "path": "/v1/images/generations",
                "requestContext": {"path": "/v1/images/generations"},
                "headers": {"host": "127.0.0.1:3000"},
            },
            "http://127.0.0.1:3000",
        ),
        ({"path": "/v1/images/generations", "headers": {}}, ""),
    ],
)
def test_base_url(event, expected):
    assert base_url_of(event, event["headers"]) == expected
