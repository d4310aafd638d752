"""GET /v1/models: what a key may use AND the routes serve, in OpenAI's shape; 404 for the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imagegw.domain import Caller, HttpRequest
from imagegw.errors import InvalidApiKey, ModelNotFound
from imagegw.model_listing import ModelListing
from imagegw.request.catalog import Catalog
from imagegw.upstream import PROVIDER_TYPES, parse_routes, shipped_routes_document

CATALOG = Catalog.load()
SHIPPED = parse_routes(shipped_routes_document(), PROVIDER_TYPES)
BEDROCK_DOC: dict[str, Any] = {
    "providers": {
        "openai": {"type": "openai", "base_url": "https://api.openai.com/v1"},
        "bedrock": {"type": "bedrock", "region": "us-west-2"},
    },
    "translations": {
        "nova-canvas-variations": shipped_routes_document()["translations"]["nova-canvas-variations"]
    },
    "models": {
        "sd3.5-large": [{"provider": "bedrock", "model": "stability.sd3-5-large-v1:0"}],
        "nova-canvas": [
            {
                "provider": "bedrock",
                "model": "stability.stable-image-core-v1:1",
                "operations": ["generations"],
            },
            {
                "provider": "bedrock",
                "model": "stability.sd3-5-large-v1:0",
                "operations": ["variations"],
                "translate": "nova-canvas-variations",
            },
        ],
        "*": [{"provider": "openai", "model": "*"}],
    },
}
BEDROCK = parse_routes(BEDROCK_DOC, PROVIDER_TYPES)
OPENAI_MODELS = [n for n in CATALOG.names() if "bedrock" not in CATALOG.get(n).listing.upstream_types]


class FakeAccounts:
    def __init__(self, allowed: list[str] | None = None) -> None:
        self.allowed = allowed
        self.seen: list[str | None] = []

    def authenticate(self, authorization: str | None) -> Caller:
        self.seen.append(authorization)
        if authorization != "Bearer sk-good":
            raise InvalidApiKey("Incorrect API key provided: sk-...")
        return Caller("h", "k1", "sk-...", allowed_models=self.allowed)


def http(path: str = "/v1/models", key: str = "sk-good") -> HttpRequest:
    return HttpRequest("GET", path, {"authorization": f"Bearer {key}"}, b"", "req_1")


def listing(allowed: list[str] | None = None, routes: Any = SHIPPED) -> ModelListing:
    return ModelListing(CATALOG, FakeAccounts(allowed), lambda: routes)  # type: ignore[arg-type]


def ids(answer: Any) -> list[str]:
    doc = json.loads(answer.body)
    assert doc["object"] == "list"
    return [m["id"] for m in doc["data"]]


def test_the_shipped_routes_list_the_openai_models_only():
    answer = listing().list(http())
    assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
    assert ids(answer) == OPENAI_MODELS  # a * route to OpenAI does not serve Stability or Nova Canvas
    for item in json.loads(answer.body)["data"]:
        assert set(item) <= {"id", "object", "created", "owned_by", "imagegw"}
        assert item["object"] == "model" and isinstance(item["created"], int) and item["created"] > 0
        assert item["owned_by"] == "system"


def test_retired_names_say_what_serves_them():
    data = {m["id"]: m for m in json.loads(listing().list(http()).body)["data"]}
    assert data["dall-e-2"]["imagegw"] == {"retired": "2026-05-12", "served_by": ["gpt-image-1.5"]}
    assert data["gpt-image-1"]["imagegw"] == {"retired": "2026-10-23", "served_by": ["gpt-image-1.5"]}
    assert "imagegw" not in data["gpt-image-1.5"]


def test_bedrock_routes_list_what_they_route_and_nova_canvas_as_retired():
    data = {m["id"]: m for m in json.loads(listing(routes=BEDROCK).list(http()).body)["data"]}
    assert "sd3.5-large" in data and "stable-image-core" not in data  # core has no route of its own
    assert data["sd3.5-large"]["owned_by"] == "stability-ai"
    assert data["nova-canvas"]["imagegw"] == {
        "retired": "2026-09-30",
        "served_by": ["stability.sd3-5-large-v1:0", "stability.stable-image-core-v1:1"],
    }


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (["dall-e-3"], ["dall-e-3"]),
        (["dall-e-*"], ["dall-e-2", "dall-e-3"]),
        (["gpt-image-2.6*"], ["gpt-image-2.6", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare"]),
        ([], []),
    ],
)
def test_the_keys_allow_list_applies(allowed, expected):
    assert ids(listing(allowed).list(http())) == expected


def test_retrieve():
    answer = listing().retrieve(http("/v1/models/dall-e-3"), "dall-e-3")
    assert json.loads(answer.body) == {
        "id": "dall-e-3",
        "object": "model",
        "created": 1698785189,
        "owned_by": "system",
        "imagegw": {"retired": "2026-05-12", "served_by": ["gpt-image-1.5"]},
    }
    snapshot = json.loads(listing().retrieve(http(), "gpt-image-2-2026-04-21").body)
    assert snapshot["id"] == "gpt-image-2-2026-04-21"
    alias = json.loads(listing(routes=BEDROCK).retrieve(http(), "stability.sd3-5-large-v1%3A0").body)
    assert alias["id"] == "stability.sd3-5-large-v1:0" and alias["owned_by"] == "stability-ai"


@pytest.mark.parametrize(
    ("allowed", "routes", "model"),
    [
        (None, SHIPPED, "dall-e-4"),  # unknown
        (["dall-e-3"], SHIPPED, "dall-e-2"),  # not allowed for this key
        (None, SHIPPED, "sd3.5-large"),  # not routed by this deployment
        (None, BEDROCK, "stable-image-ultra"),
        (["sd3.5-large"], BEDROCK, "stability.sd3-5-large-v1:0"),  # the allow-list applies to the name asked
        (None, SHIPPED, "x" * 5000),
    ],
)
def test_retrieve_refuses_a_model_the_key_may_not_see(allowed, routes, model):
    with pytest.raises(ModelNotFound) as info:
        listing(allowed, routes).retrieve(http(), model)
    error = info.value
    assert (error.status, error.code) == (404, "model_not_found")
    assert error.message.endswith("does not exist or you do not have access to it.")
    assert len(error.message) < 400


def test_a_bad_key_is_refused_before_anything_else():
    accounts = FakeAccounts()
    models = ModelListing(CATALOG, accounts, lambda: SHIPPED)  # type: ignore[arg-type]
    with pytest.raises(InvalidApiKey):
        models.list(http(key="sk-bad"))
    with pytest.raises(InvalidApiKey):
        models.retrieve(http(key="sk-bad"), "dall-e-4")  # 401, not a 404 that says whether it exists
    assert accounts.seen == ["Bearer sk-bad", "Bearer sk-bad"]


def test_unreadable_routes_are_a_502_like_an_image_request():
    from imagegw.errors import UpstreamError

    def broken() -> Any:
        raise RuntimeError("ssm down")

    models = ModelListing(CATALOG, FakeAccounts(), broken)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError) as info:
        models.list(http())
    assert info.value.status == 502
