"""Property tests: whatever a client sends, parse + validate either succeed or raise a 4xx ApiError.

Gateways elsewhere answer 5xx to malformed bodies (lessons.md); this searches for such inputs.
"""

from __future__ import annotations

import json

from helpers.builders import http, json_request, multipart_request
from helpers.images import png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagegw.domain import OPERATIONS
from imagegw.errors import ApiError
from imagegw.request.catalog import Catalog
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate

CATALOG = Catalog.load()
FIELDS = [
    "model", "prompt", "n", "size", "quality", "style", "response_format", "background", "output_format",
    "output_compression", "stream", "partial_images", "input_fidelity", "moderation", "user", "images",
    "mask", "image", "complexity", "svg",
]  # fmt: skip
MODELS = [*CATALOG.names(), "foo", "", "DALL-E-3", "gpt-image-2-2099-01-01"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(MODELS),
    st.sampled_from(["1024x1024", "256x256", "1792x1024", "auto", "0x0", "16x99999", "1024X1024", "hd"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)


def outcome(operation, request) -> None:
    try:
        validate(parse_request(operation, request), CATALOG)
    except ApiError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.message)
        body = exc.body()["error"]
        assert isinstance(body["message"], str) and body["message"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operation=st.sampled_from(OPERATIONS), body=bodies)
def test_any_json_object_is_answered_without_a_server_error(operation, body):
    try:
        text = json.dumps(body)
    except ValueError:
        return
    outcome(operation, json_request(operation, text))


@settings(max_examples=200, deadline=None)
@given(operation=st.sampled_from(OPERATIONS), raw=st.binary(max_size=300))
def test_any_bytes_as_json_are_answered_without_a_server_error(operation, raw):
    outcome(operation, json_request(operation, raw))


@settings(max_examples=150, deadline=None)
@given(
    operation=st.sampled_from(OPERATIONS),
    raw=st.binary(max_size=300),
    content_type=st.sampled_from(
        ["multipart/form-data; boundary=x", "multipart/form-data", "text/plain", "", "image/png", None]
    ),
)
def test_any_bytes_with_any_content_type_are_answered_without_a_server_error(operation, raw, content_type):
    outcome(operation, http(operation, raw, content_type))


PNG = png(32, 32)


@settings(max_examples=150, deadline=None)
@given(
    operation=st.sampled_from(("edits", "variations")),
    text_fields=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=20), max_size=6),
    file_names=st.lists(
        st.sampled_from(["image", "image[]", "image[0]", "image[7]", "mask", "images[0]", "x"]), max_size=4
    ),
    payload=st.one_of(st.just(PNG), st.binary(max_size=64), st.just(PNG[:40])),
)
def test_any_multipart_form_is_answered_without_a_server_error(operation, text_fields, file_names, payload):
    parts = [(name, value) for name, value in text_fields.items()]
    parts += [(name, ("f.png", payload, "application/octet-stream")) for name in file_names]
    outcome(operation, multipart_request(operation, parts))
