"""Estimated cost of a request, from the price table in `prices.json` (USD; credits are USD cents).

The numbers are estimates copied from OpenAI's pricing page (Bedrock's from third-party lists) and kept
in sync by hand. DALL-E and Bedrock models are priced per image by size and quality; GPT image models by
tokens (text input, image input, output).
Before the upstream call the cost is estimated from OpenAI's output tokens per image (`estimate_cents`);
after it, from the usage the upstream reported (`cost`).

A request served by another model (dall-e-3 `hd` translated to gpt-image-1.5 `high`) has two prices: the
client model's (what the key is charged) and the upstream model's applied to the usage it reported (what
the operator pays). `charge` gives both, and charges at least the upstream cost unless the table says
`"charge_at_least_upstream_cost": false` (at the top, or on the client model's entry).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

from imagegw.domain import UpstreamResult

# Amounts in cents are kept to a millionth of a cent: exact in DynamoDB, far below any real price.
CENT_QUANTUM = Decimal("0.000001")
_PER_MILLION = Decimal(1_000_000)
_CENTS_PER_USD = Decimal(100)
_BASE_AREA = 1024 * 1024
# The geography prefixes of Bedrock's cross-region inference profiles (`us.`, `eu.`, `global.` ...).
_BEDROCK_GEOS = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})


def cents(value: Decimal | float | int | str) -> Decimal:
    """A number of cents, rounded to the quantum (floats go through str to stay exact)."""
    return Decimal(str(value)).quantize(CENT_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Cost:
    images: int
    input_tokens: int
    output_tokens: int
    cents: Decimal


@dataclass(frozen=True)
class Charge:
    """What settle records: the key's charge, and what the upstream cost the operator."""

    charged: Cost
    upstream: Cost
    upstream_model: str | None = None


class PriceTable:
    def __init__(self, doc: dict[str, Any]) -> None:
        self._floor = bool(doc.get("charge_at_least_upstream_cost", True))
        self._models: dict[str, dict[str, Any]] = doc["models"]
        self._default: dict[str, Any] = doc["default"]
        self._output_tokens: dict[str, dict[str, dict[str, int]]] = doc.get("output_tokens", {})

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        return _load(str(path or Path(__file__).with_name("prices.json")))

    def entry(self, model: str, operation: str | None = None) -> dict[str, Any]:
        """The model's entry: exact name, else the longest entry the name extends with `-<suffix>`; with
        the entry's own prices for `operation` where it has some (`"operations": {"edits": {...}}`)."""
        name = self._entry_name(model)
        entry = self._models[name] if name is not None else self._default
        override = entry.get("operations", {}).get(operation) if operation else None
        return {**entry, **override} if override else entry

    def known(self, model: str) -> bool:
        return self._entry_name(model) is not None

    def _entry_name(self, model: str) -> str | None:
        model = bedrock_model_id(model)
        if model in self._models:
            return model
        matches = [name for name in self._models if model.startswith(name + "-")]
        return max(matches, key=len) if matches else None

    def charge(
        self, model: str, params: dict[str, Any], result: UpstreamResult, operation: str | None = None
    ) -> Charge:
        """The key's charge (the client model's price for the operation, at least the upstream cost) and
        the upstream cost (the upstream model's price on its reported usage; the client model's when that
        one is unpriced)."""
        charged = self.cost(model, params, result, operation)
        upstream_model = result.model or model
        if upstream_model == model or not self.known(upstream_model):
            return Charge(charged, charged, upstream_model)
        upstream = self.cost(upstream_model, {**params, **_reported(result)}, result)
        floor = self.entry(model).get("charge_at_least_upstream_cost", self._floor)
        if floor and upstream.cents > charged.cents:
            charged = Cost(charged.images, charged.input_tokens, charged.output_tokens, upstream.cents)
        return Charge(charged, upstream, upstream_model)

    def estimate_cents(
        self, model: str, params: dict[str, Any], n: int, operation: str | None = None
    ) -> Decimal:
        """What `n` images should cost, before the upstream says: reserved against a credit quota."""
        entry = self.entry(model, operation)
        size, quality = params.get("size"), params.get("quality")
        if "per_image" in entry:
            return cents(_image_price(entry["per_image"], size, quality) * n * _CENTS_PER_USD)
        tokens = self.output_tokens_per_image(entry, size, quality) * n
        return cents(Decimal(tokens) * _token_price(entry, "output") / _PER_MILLION * _CENTS_PER_USD)

    def cost(
        self, model: str, params: dict[str, Any], result: UpstreamResult, operation: str | None = None
    ) -> Cost:
        """The estimated cost of a finished request: reported tokens where there are any."""
        entry = self.entry(model, operation)
        images = len(result.images)
        size = result.meta.get("size") or params.get("size")
        quality = result.meta.get("quality") or params.get("quality")
        usage = result.usage or {}
        input_tokens = _int(usage.get("input_tokens"))
        output_tokens = _int(usage.get("output_tokens"))
        if "per_image" in entry:
            # DALL-E sizes and qualities are what the client asked for (a GPT route may report others).
            price = _image_price(entry["per_image"], params.get("size"), params.get("quality"))
            return Cost(images, input_tokens, output_tokens, cents(price * images * _CENTS_PER_USD))
        if not usage:
            estimate = self.output_tokens_per_image(entry, size, quality) * images
            usd = Decimal(estimate) * _token_price(entry, "output") / _PER_MILLION
            return Cost(images, 0, 0, cents(usd * _CENTS_PER_USD))
        details = usage.get("input_tokens_details") or {}
        image_in = _int(details.get("image_tokens"))
        text_in = _int(details.get("text_tokens")) if details else input_tokens
        usd = (
            Decimal(text_in) * _token_price(entry, "text_input")
            + Decimal(image_in) * _token_price(entry, "image_input")
            + Decimal(output_tokens) * _token_price(entry, "output")
        ) / _PER_MILLION
        return Cost(images, input_tokens, output_tokens, cents(usd * _CENTS_PER_USD))

    def output_tokens_per_image(self, entry: dict[str, Any], size: Any, quality: Any) -> int:
        table = self._output_tokens.get(entry.get("output_tokens", ""), {})
        if not table:
            return 0
        tier = quality if quality in ("low", "medium", "high") else "high"  # auto and newer tiers: high
        if isinstance(size, str) and size in table:
            return int(table[size][tier])
        area = _area(size)
        if area and "1024x1024" in table:
            return math.ceil(table["1024x1024"][tier] * area / _BASE_AREA)
        return max(int(row[tier]) for row in table.values())  # auto: the largest standard size


def bedrock_model_id(model: str) -> str:
    """The model id an inference profile (`us.stability...`) or an ARN names, which is what Bedrock prices;
    any other name as it is."""
    if model.startswith("arn:"):
        model = model.rsplit("/", 1)[-1]
    geo, dot, rest = model.partition(".")
    return rest if dot and geo in _BEDROCK_GEOS and "." in rest else model


@cache
def _load(path: str) -> PriceTable:
    return PriceTable(json.loads(Path(path).read_text(encoding="utf-8")))


def _reported(result: UpstreamResult) -> dict[str, Any]:
    """The size and quality the upstream reports it made (a translated request's own)."""
    return {k: result.meta[k] for k in ("size", "quality") if result.meta.get(k)}


def _image_price(table: dict[str, dict[str, float]], size: Any, quality: Any) -> Decimal:
    row = table.get(size) if isinstance(size, str) else None
    if row is None:  # unknown size: the dearest one
        row = max(table.values(), key=lambda r: max(r.values()))
    if isinstance(quality, str) and quality in row:
        price = row[quality]
    elif "standard" in row:
        price = row["standard"]
    else:
        price = max(row.values())
    return Decimal(str(price))


def _token_price(entry: dict[str, Any], kind: str) -> Decimal:
    return Decimal(str(entry.get("tokens", {}).get(kind, 0)))


def _area(size: Any) -> int:
    if not isinstance(size, str):
        return 0
    width, sep, height = size.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        return 0
    return int(width) * int(height)


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
