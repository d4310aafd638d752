"""Routes documents (shipped, file, SSM): parsing, validation and sources, with moto for AWS."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from imagegw.request.catalog import Catalog
from imagegw.settings import Settings
from imagegw.upstream import (
    PROVIDER_TYPES,
    CooldownTracker,
    RoutesError,
    build_router,
    parse_routes,
    shipped_routes_document,
)
from imagegw.upstream.config import RoutesSource


def settings(**kw) -> Settings:
    return Settings("b", "k", "u", "j", "i", "q", **kw)


def minimal(**models) -> dict:
    return {
        "providers": {"openai": {"type": "openai", "base_url": "https://upstream.example/v1"}},
        "models": models or {"*": [{"provider": "openai", "model": "*"}]},
    }


# ----- the shipped document --------------------------------------------------------------------------


def test_shipped_routes_serve_every_catalog_model_and_operation():
    config = parse_routes(shipped_routes_document(), PROVIDER_TYPES)
    catalog = Catalog.load()
    for model in catalog.names():
        for operation in catalog.get(model).endpoints:
            assert config.routes_for(model, operation), (model, operation)


def test_shipped_routes_translate_retired_models_to_gpt_image_1_5():
    config = parse_routes(shipped_routes_document(), PROVIDER_TYPES)
    for model in ("dall-e-2", "dall-e-3", "gpt-image-1"):
        (route,) = config.routes_for(model, "generations")
        assert (route.model, route.label) == ("gpt-image-1.5", "openai:gpt-image-1.5")
    assert config.routes_for("dall-e-3", "generations")[0].translate.name == "dall-e-3"
    assert config.routes_for("gpt-image-2.6", "edits")[0].model == "gpt-image-2.6"


def test_build_router_with_the_shipped_file_makes_no_aws_call():
    router = build_router(settings(), Catalog.load(), cooldowns=CooldownTracker())
    assert set(router.table().providers) == {"openai"}


# ----- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "JSON object"),
        ({"models": {}}, "providers"),
        (
            {
                "providers": {"x": {"type": "bedrock-later"}},
                "models": {"m": [{"provider": "x", "model": "m"}]},
            },
            "providers.x.type",
        ),
        ({**minimal(), "models": {"m": []}}, "models.m"),
        ({**minimal(), "models": {"m": [{"provider": "nope", "model": "m"}]}}, "models.m[0].provider"),
        ({**minimal(), "models": {"m": [{"provider": "openai"}]}}, "models.m[0].model"),
        ({**minimal(), "models": {"m": [{"provider": "openai", "model": "m", "weight": -1}]}}, "weight"),
        ({**minimal(), "models": {"m": [{"provider": "openai", "model": "m", "wieght": 2}]}}, "wieght"),
        (
            {**minimal(), "models": {"m": [{"provider": "openai", "model": "m", "translate": "x"}]}},
            "translate",
        ),
        (
            {**minimal(), "models": {"m": [{"provider": "openai", "model": "m", "operations": ["x"]}]}},
            "operations",
        ),
        ({**minimal(), "translations": {"t": {"variations": {"operation": "paint"}}}}, "translations.t"),
        ({**minimal(), "translations": {"t": {"revised_prompt": "yes"}}}, "revised_prompt"),
        ({**minimal(), "resilience": {"failures_before_cooldown": 0}}, "resilience"),
        (
            {
                "providers": {"o": {"type": "openai", "base_url": "ftp://x"}},
                "models": {"m": [{"provider": "o", "model": "m"}]},
            },
            "https://",
        ),
    ],
)
def test_malformed_documents_name_the_bad_field(doc, where):
    with pytest.raises(RoutesError, match=None) as info:
        parse_routes(doc, PROVIDER_TYPES)
    assert where in str(info.value)


def test_a_bad_routes_file_fails_at_build_time(tmp_path):
    path = tmp_path / "routes.json"
    path.write_text("{not json")
    with pytest.raises(RoutesError, match="not valid JSON"):
        build_router(settings(routes_source=str(path)), Catalog.load())
    with pytest.raises(RoutesError, match="cannot read"):
        build_router(settings(routes_source=str(tmp_path / "missing.json")), Catalog.load())


def test_an_azure_provider_without_endpoint_fails_at_build_time(tmp_path):
    path = tmp_path / "routes.json"
    path.write_text(
        json.dumps(
            {"providers": {"az": {"type": "azure"}}, "models": {"m": [{"provider": "az", "model": "m"}]}}
        )
    )
    with pytest.raises(RoutesError, match="endpoint"):
        build_router(settings(routes_source=str(path)), Catalog.load())


def test_wildcard_deployment_and_operations_filter():
    doc = {
        "providers": {
            "az": {"type": "azure", "endpoint": "https://r.example", "api_version": "2025-04-01-preview"}
        },
        "models": {"*": [{"provider": "az", "model": "*", "deployment": "*", "operations": ["generations"]}]},
    }
    config = parse_routes(doc, PROVIDER_TYPES)
    (route,) = config.routes_for("gpt-image-1.5", "generations")
    assert (route.model, route.deployment, route.label) == (
        "gpt-image-1.5",
        "gpt-image-1.5",
        "az:gpt-image-1.5",
    )
    assert config.routes_for("gpt-image-1.5", "edits") == []


# ----- SSM source ------------------------------------------------------------------------------------


@mock_aws
def test_routes_from_ssm_are_read_lazily_cached_and_refreshed():
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/imagegw/routes", Value=json.dumps(minimal()), Type="String")
    router = build_router(settings(routes_source="ssm:/imagegw/routes"), Catalog.load(), ssm_client=ssm)
    first = router.table()
    assert first.config.providers["openai"].url == "https://upstream.example/v1"
    assert router.table() is first  # cached

    changed = minimal()
    changed["providers"]["openai"]["base_url"] = "https://other.example/v1"
    ssm.put_parameter(Name="/imagegw/routes", Value=json.dumps(changed), Type="String", Overwrite=True)
    source = router._routes
    source._ssm.clear_cache()  # as if max_age had passed
    assert router.table().config.providers["openai"].url == "https://other.example/v1"


@mock_aws
def test_ssm_failure_after_a_good_read_keeps_the_last_good_routes():
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/r", Value=json.dumps(minimal()), Type="String")
    errors = []
    source = RoutesSource("ssm:/r", PROVIDER_TYPES, ssm_client=ssm, on_error=errors.append)
    good = source.get()
    ssm.delete_parameter(Name="/r")
    source._ssm.clear_cache()
    assert source.get() is good and len(errors) == 1


@mock_aws
def test_missing_ssm_routes_are_a_502_without_the_parameter_name():
    from imagegw.domain import ImageRequest
    from imagegw.errors import UpstreamError

    ssm = boto3.client("ssm", region_name="us-east-1")
    router = build_router(settings(routes_source="ssm:/secret/routes/name"), Catalog.load(), ssm_client=ssm)
    with pytest.raises(UpstreamError) as info:
        router.call(ImageRequest("generations", "gpt-image-1.5", {"prompt": "p"}), deadline=1e12)
    assert "/secret/routes/name" not in info.value.message
