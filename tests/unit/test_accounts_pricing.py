"""The price table: per-image DALL-E prices, token prices for GPT image models, estimates before the call."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

import imagegw
from imagegw.accounts.pricing import PriceTable
from imagegw.domain import GeneratedImage, UpstreamResult


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def result(images: int = 1, usage=None, meta=None) -> UpstreamResult:
    return UpstreamResult([GeneratedImage(b"x") for _ in range(images)], usage=usage, meta=meta or {})


def test_price_table_ships_with_the_package_and_says_it_is_an_estimate():
    doc = json.loads((Path(imagegw.__file__).parent / "accounts" / "prices.json").read_text())
    assert "estimate" in " ".join(doc["_comment"]).lower()
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"} <= set(doc["models"])


@pytest.mark.parametrize(
    ("model", "size", "quality", "n", "expected_cents"),
    [
        ("dall-e-2", "256x256", None, 1, "1.6"),
        ("dall-e-2", "512x512", "standard", 2, "3.6"),
        ("dall-e-2", "1024x1024", None, 10, "20"),
        ("dall-e-3", "1024x1024", "standard", 1, "4"),
        ("dall-e-3", "1024x1024", "hd", 1, "8"),
        ("dall-e-3", "1792x1024", "hd", 1, "12"),
        ("dall-e-3", "1024x1792", "standard", 1, "8"),
        ("dall-e-3", "999x999", "hd", 1, "12"),  # unknown size: the dearest
    ],
)
def test_dall_e_is_priced_per_image(prices, model, size, quality, n, expected_cents):
    params = {"size": size, "quality": quality, "n": n}
    assert prices.estimate_cents(model, params, n) == Decimal(expected_cents)
    assert prices.cost(model, params, result(n)).cents == Decimal(expected_cents)


def test_gpt_image_estimate_uses_output_tokens_per_image(prices):
    # gpt-image-1 high 1024x1024: 4160 output tokens at $40 per 1M = $0.1664 per image.
    params = {"size": "1024x1024", "quality": "high"}
    assert prices.estimate_cents("gpt-image-1", params, 2) == Decimal("33.28")
    assert prices.estimate_cents("gpt-image-1", {"size": "1024x1024", "quality": "low"}, 1) == Decimal(
        "1.088"
    )
    # auto quality is reserved as high, auto size as the largest standard size (1024x1536).
    assert prices.estimate_cents("gpt-image-1", {"size": "auto", "quality": "auto"}, 1) == Decimal("24.96")


def test_custom_sizes_scale_with_area(prices):
    base = prices.estimate_cents("gpt-image-2", {"size": "1024x1024", "quality": "medium"}, 1)
    big = prices.estimate_cents("gpt-image-2", {"size": "2048x2048", "quality": "medium"}, 1)
    assert big == base * 4


def test_gpt_image_cost_uses_reported_tokens(prices):
    usage = {
        "total_tokens": 4210,
        "input_tokens": 50,
        "output_tokens": 4160,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
    }
    cost = prices.cost("gpt-image-1", {"size": "1024x1024", "quality": "high"}, result(1, usage))
    # (10 x $5 + 40 x $10 + 4160 x $40) / 1M = $0.16685
    assert cost.cents == Decimal("16.685")
    assert (cost.images, cost.input_tokens, cost.output_tokens) == (1, 50, 4160)


def test_gpt_image_cost_without_usage_falls_back_to_the_estimate(prices):
    cost = prices.cost(
        "gpt-image-1-mini",
        {"size": "auto", "quality": "auto"},
        result(1, meta={"size": "1024x1024", "quality": "low"}),
    )
    assert cost.cents == Decimal("0.2176")  # 272 tokens at $8 per 1M


@pytest.mark.parametrize(
    ("model", "entry_like"),
    [
        ("gpt-image-1-mini", "gpt-image-1-mini"),
        ("gpt-image-1.5", "gpt-image-1.5"),
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("gpt-image-2.5-preview", "gpt-image-2.5"),
        ("dall-e-3", "dall-e-3"),
    ],
)
def test_snapshots_match_their_family(prices, model, entry_like):
    assert prices.entry(model) is prices.entry(entry_like)


def test_unknown_models_use_the_default(prices):
    entry = prices.entry("some-new-model")
    assert entry["tokens"]["output"] > 0


# ----- what the upstream cost, beside what the key is charged ------------------------------------------


def _translated(tokens: int) -> UpstreamResult:
    """dall-e-3 hd as gpt-image-1.5 serves it: high quality, the usage that model reports."""
    usage = {"input_tokens": 20, "output_tokens": tokens, "input_tokens_details": {"text_tokens": 20}}
    return UpstreamResult([GeneratedImage(b"png")], usage, meta={"quality": "high"}, model="gpt-image-1.5")


def test_a_translated_request_is_charged_at_least_its_upstream_cost():
    hd = {"size": "1024x1024", "quality": "hd"}
    charge = PriceTable.load().charge("dall-e-3", hd, _translated(4160))
    # gpt-image-1.5: (20 x $5 + 4160 x $32) / 1M = $0.13322, over dall-e-3 hd's $0.08 list price
    assert charge.upstream_model == "gpt-image-1.5"
    assert charge.upstream.cents == Decimal("13.322")
    assert charge.charged.cents == Decimal("13.322") and charge.charged.images == 1


def test_the_list_price_stands_when_the_upstream_costs_less():
    charge = PriceTable.load().charge("dall-e-3", {"size": "1024x1024", "quality": "hd"}, _translated(272))
    assert charge.charged.cents == Decimal(8)
    assert charge.upstream.cents == Decimal("0.8804")


def test_the_price_table_may_charge_the_list_price_only():
    doc = json.loads((Path(imagegw.__file__).parent / "accounts" / "prices.json").read_text())
    doc["models"]["dall-e-3"]["charge_at_least_upstream_cost"] = False
    charge = PriceTable(doc).charge("dall-e-3", {"size": "1024x1024", "quality": "hd"}, _translated(4160))
    assert charge.charged.cents == Decimal(8) and charge.upstream.cents == Decimal("13.322")


def test_an_untranslated_request_costs_what_it_is_charged():
    result = UpstreamResult([GeneratedImage(b"png")], {"output_tokens": 272}, model="gpt-image-1.5")
    charge = PriceTable.load().charge("gpt-image-1.5", {"quality": "low"}, result)
    assert charge.charged == charge.upstream


# ----- Amazon Bedrock: per image, under the client-facing name and the Bedrock id ------------------------


@pytest.mark.parametrize(
    ("model", "params", "n", "expected_cents"),
    [
        ("sd3.5-large", {"size": "1344x768"}, 2, "16"),
        ("stable-image-core", {"size": "auto"}, 1, "4"),
        ("stable-image-ultra", {"size": "1024x1024"}, 4, "56"),
        ("stability.stable-image-ultra-v1:1", {"size": "1024x1024"}, 1, "14"),
        ("nova-canvas", {"size": "1024x1024", "quality": "premium"}, 1, "6"),
        ("nova-canvas", {"size": "2048x2048", "quality": "standard"}, 1, "6"),
    ],
)
def test_bedrock_models_are_priced_per_image(prices, model, params, n, expected_cents):
    assert prices.estimate_cents(model, {**params, "n": n}, n) == Decimal(expected_cents)
    assert prices.cost(model, params, result(n)).cents == Decimal(expected_cents)


def test_every_bedrock_catalog_model_and_its_alias_have_one_price(prices):
    from imagegw.request.catalog import Catalog

    catalog = Catalog.load()
    for name in catalog.names():
        spec = catalog.get(name)
        if "bedrock" not in spec.listing.upstream_types:
            continue
        assert prices.known(name), name
        for alias in spec.listing.aliases:
            assert prices.entry(alias) == prices.entry(name), alias


@pytest.mark.parametrize(
    "route_model",
    [
        "stability.stable-image-inpaint-v1:0",
        "us.stability.stable-image-inpaint-v1:0",
        "global.stability.stable-image-inpaint-v1:0",
        "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.stability.stable-image-inpaint-v1:0",
        "arn:aws:bedrock:us-west-2::foundation-model/stability.stable-image-inpaint-v1:0",
    ],
)
def test_an_inference_profile_or_arn_is_priced_as_its_model(prices, route_model):
    assert prices.known(route_model)
    assert prices.entry(route_model) is prices.entry("stability.stable-image-inpaint-v1:0")


def test_a_core_edit_is_priced_as_the_inpainting_that_serves_it(prices):
    # reserved at the inpainting's price before the call, so a credit quota is not overshot
    assert prices.estimate_cents("stable-image-core", {"size": "auto"}, 2, "edits") == Decimal(14)
    assert prices.estimate_cents("stable-image-core", {"size": "auto"}, 2, "generations") == Decimal(8)
    assert prices.estimate_cents("stability.stable-image-core-v1:1", {"size": "auto"}, 1, "edits") == Decimal(
        7
    )
    served = UpstreamResult([GeneratedImage(b"png")], model="us.stability.stable-image-inpaint-v1:0")
    charge = prices.charge("stable-image-core", {"size": "auto"}, served, "edits")
    assert charge.upstream.cents == Decimal(7) and charge.charged.cents == Decimal(7)
    assert charge.upstream_model == "us.stability.stable-image-inpaint-v1:0"
    # without the operation's price, the floor still charges at least what the inpainting cost
    floored = prices.charge("stable-image-core", {"size": "auto"}, served)
    assert floored.charged.cents == Decimal(7)


def test_an_operations_price_overrides_only_that_operation():
    doc = {
        "models": {
            "m": {
                "per_image": {"*": {"standard": 0.01}},
                "operations": {"edits": {"per_image": {"*": {"standard": 0.05}}}},
            }
        },
        "default": {"per_image": {"*": {"standard": 1}}},
    }
    table = PriceTable(doc)
    assert table.estimate_cents("m", {}, 1, "edits") == Decimal(5)
    assert table.estimate_cents("m", {}, 1, "variations") == Decimal(1)
    assert table.estimate_cents("m", {}, 1) == Decimal(1)
    assert table.cost("m-2026-01-01", {}, result(3), "edits").cents == Decimal(15)


def test_names_that_are_not_profiles_keep_their_dots(prices):
    assert prices.entry("gpt-image-1.5") is prices.entry("gpt-image-1.5-2025-12-16")
    assert not prices.known("us.some-new-model")  # a geography prefix alone is not a Bedrock id
