"""The model catalog: per-model rules as data (models.json), loaded once per container.

Validation reads only this: which endpoints a model serves, which parameters it takes on each, their types,
ranges, allowed values and defaults, and the limits on input images and masks. A new model is a new entry
in models.json (`extends` copies an existing entry, so a sibling model is often three lines).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imagegw.errors import ModelNotFound

DEFAULT_PATH = Path(__file__).with_name("models.json")

# Parameters the gateway answers itself and never forwards upstream as the client sent them:
# - response_format: the gateway always takes b64 images from the upstream and stores/signs URLs itself;
#   `url` is accepted for every model (a documented extension), `b64_json` too.
# - stream, partial_images: behind Lambda the gateway answers a buffered SSE body; the provider decides
#   whether to ask its upstream for a stream (and how many partial images) or to synthesize the events.
# `user` is NOT in this set: it is forwarded as-is (its purpose is upstream abuse monitoring).
GATEWAY_PARAMS: frozenset[str] = frozenset({"response_format", "stream", "partial_images"})

PARAM_TYPES = frozenset({"string", "integer", "number", "boolean", "enum", "size", "object"})
# A `*` route serves a model only through a provider of one of these types (catalog `upstream_types`).
DEFAULT_UPSTREAM_TYPES: frozenset[str] = frozenset({"openai", "azure"})


class CatalogError(ValueError):
    """models.json is malformed: raised at load (cold start), never per request."""


@dataclass(frozen=True)
class SizeRule:
    """Custom `WxH` sizes (gpt-image-2 and later) beyond the listed values."""

    multiple_of: int = 16
    max_aspect_ratio: float = 3.0
    max_edge: int = 3840
    min_pixels: int = 0
    max_pixels: int = 3840 * 2160


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as a model takes it on one endpoint; `default` is already resolved for that endpoint."""

    name: str
    type: str
    values: tuple[Any, ...] = ()
    min: float | None = None  # an int for type integer
    max: float | None = None
    max_length: int | None = None
    required: bool = False
    default: Any = None
    upstream_default: Any = None
    requires: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    value_requires: Mapping[Any, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    custom: SizeRule | None = None
    max_message: str | None = None
    max_code: str | None = "integer_above_max_value"
    # type "object": its members, named by their path ("svg.reasoning.effort"); unknown members are refused.
    properties: Mapping[str, ParamSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageLimits:
    max_count: int = 1
    formats: tuple[str, ...] = ("png",)  # sniffed formats: png, jpeg, webp, gif
    max_bytes: int = 4 * 1024 * 1024
    square: bool = False
    # Without a mask the first image must be in one of these Pillow modes (dall-e-2: alpha is the mask).
    modes_without_mask: tuple[str, ...] = ()


@dataclass(frozen=True)
class MaskLimits:
    formats: tuple[str, ...] = ("png",)
    max_bytes: int = 4 * 1024 * 1024
    same_size_as_image: bool = True
    alpha_required: bool = False
    excludes_mask: bool = False  # markup: cannot be combined with a mask


@dataclass(frozen=True)
class Inputs:
    image: ImageLimits
    mask: MaskLimits | None = None
    markup: MaskLimits | None = None  # a transparent PNG overlaid on the first image to guide the edit


@dataclass(frozen=True)
class Listing:
    """How GET /v1/models shows a model, and which provider types serve it natively."""

    created: int = 0
    owned_by: str = "system"
    retired: str | None = None  # the date the name's own upstream retired it; served by translation since
    upstream_types: frozenset[str] = DEFAULT_UPSTREAM_TYPES
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the name the client used (a dated snapshot keeps its own name)
    gpt: bool  # GPT image family: usage + top-level background/output_format/quality/size in responses
    endpoints: frozenset[str]
    default_response_format: str  # "url" for dall-e, "b64_json" for GPT
    canonical: str = ""  # the catalog entry it resolved to (gpt-image-2 for gpt-image-2-2026-04-21)
    json_edits: bool = False  # edits may come as JSON with image URLs
    params: Mapping[str, Mapping[str, ParamSpec]] = field(default_factory=dict, compare=False)
    inputs: Mapping[str, Inputs] = field(default_factory=dict, compare=False)
    _names: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False, repr=False)
    listing: Listing = field(default_factory=lambda: Listing(), compare=False)

    def serves(self, operation: str) -> bool:
        return operation in self.endpoints

    def takes(self, operation: str, param: str) -> bool:
        """Does the model accept this parameter on this endpoint."""
        return param in self.params.get(operation, {})

    def params_for(self, operation: str) -> frozenset[str]:
        """Every parameter the model takes on this endpoint."""
        return self._names.get(operation, frozenset())

    def param(self, operation: str, name: str) -> ParamSpec | None:
        return self.params.get(operation, {}).get(name)

    def inputs_for(self, operation: str) -> Inputs | None:
        return self.inputs.get(operation)


class Catalog:
    _default: Catalog | None = None

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        patterns: list[tuple[re.Pattern[str], str]],
        defaults: Mapping[str, str],
    ) -> None:
        self._models = dict(models)
        self._patterns = patterns
        self._resolved: dict[str, ModelSpec] = {}
        self.default_model = defaults.get("model", "dall-e-2")
        self.gpt_default_model = defaults.get("gpt_model", "gpt-image-1")
        for name in (self.default_model, self.gpt_default_model):
            if name not in self._models:
                raise CatalogError(f"default model {name!r} is not in the catalog")

    @classmethod
    def load(cls, path: str | None = None) -> Catalog:
        """The catalog from `path`, or the packaged models.json (cached: read once per container)."""
        if path is None:
            if cls._default is None:
                cls._default = cls.from_dict(json.loads(DEFAULT_PATH.read_text(encoding="utf-8")))
            return cls._default
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalog:
        raw_models = data.get("models")
        if not isinstance(raw_models, dict) or not raw_models:
            raise CatalogError("the catalog needs a non-empty 'models' object")
        models: dict[str, ModelSpec] = {}
        patterns: list[tuple[re.Pattern[str], str]] = []
        for name, entry in raw_models.items():
            flat = _flatten(name, raw_models, ())
            models[name] = _build(name, flat)
            if entry.get("snapshot_pattern"):
                patterns.append((re.compile(entry["snapshot_pattern"]), name))
            for alias in entry.get("aliases", ()):
                patterns.append((re.compile(re.escape(alias)), name))
        return cls(models, patterns, data.get("defaults", {}))

    def get(self, model: str) -> ModelSpec:
        """The spec for a client-facing model name; dated snapshots resolve by their entry's pattern."""
        spec = self._models.get(model) or self._resolved.get(model)
        if spec is not None:
            return spec
        for pattern, target in self._patterns:
            if pattern.fullmatch(model):
                spec = replace(self._models[target], name=model)
                if len(self._resolved) < 1024:  # bounded: clients choose these names
                    self._resolved[model] = spec
                return spec
        raise ModelNotFound(model)

    def names(self) -> list[str]:
        return list(self._models)

    def entry(self, name: str) -> ModelSpec | None:
        """The catalog entry named exactly `name` (no alias or snapshot resolution)."""
        return self._models.get(name)

    def serving(self, operation: str) -> list[str]:
        return [name for name, spec in self._models.items() if spec.serves(operation)]


def _flatten(name: str, raw_models: Mapping[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    """The entry with `extends` applied: params merge per parameter (None removes), inputs per operation."""
    if name in seen:
        raise CatalogError(f"'extends' cycle: {' -> '.join((*seen, name))}")
    entry = raw_models.get(name)
    if not isinstance(entry, dict):
        raise CatalogError(f"model {name!r} extends an unknown model")
    parent_name = entry.get("extends")
    if parent_name is None:
        flat = copy.deepcopy(entry)
    else:
        flat = _flatten(parent_name, raw_models, (*seen, name))
        for key in ("snapshot_pattern", "aliases", "retired"):  # identity is never inherited
            flat.pop(key, None)
        for key, value in entry.items():
            if key in ("params", "inputs"):
                merged = dict(flat.get(key, {}))
                merged.update(copy.deepcopy(value))
                flat[key] = merged
            else:
                flat[key] = copy.deepcopy(value)
    flat["params"] = {k: v for k, v in flat.get("params", {}).items() if v is not None}
    return flat


def _build(name: str, flat: Mapping[str, Any]) -> ModelSpec:
    try:
        endpoints = frozenset(flat["endpoints"])
        per_op: dict[str, dict[str, ParamSpec]] = {op: {} for op in endpoints}
        for pname, raw in flat["params"].items():
            for op in raw.get("endpoints", endpoints):
                if op not in endpoints:
                    raise CatalogError(f"{name}.{pname}: endpoint {op!r} is not served by the model")
                if pname == "response_format" and "default" not in raw:
                    raw = {**raw, "default": flat["default_response_format"]}
                per_op[op][pname] = _param(pname, raw, op)
        inputs = {op: _inputs(raw) for op, raw in flat.get("inputs", {}).items()}
        return ModelSpec(
            name=name,
            gpt=bool(flat["gpt"]),
            endpoints=endpoints,
            default_response_format=flat["default_response_format"],
            canonical=name,
            json_edits=bool(flat.get("json_edits", False)),
            params=per_op,
            inputs=inputs,
            _names={op: frozenset(ps) for op, ps in per_op.items()},
            listing=Listing(
                created=int(flat.get("created", 0)),
                owned_by=str(flat.get("owned_by", "system")),
                retired=flat.get("retired"),
                upstream_types=frozenset(flat.get("upstream_types", DEFAULT_UPSTREAM_TYPES)),
                aliases=tuple(flat.get("aliases", ())),
            ),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CatalogError(f"model {name!r} is malformed: {exc!r}") from exc


def _param(pname: str, raw: Mapping[str, Any], op: str) -> ParamSpec:
    if raw.get("type") not in PARAM_TYPES:
        raise CatalogError(f"{pname}: unknown type {raw.get('type')!r}")
    default = raw.get("default")
    if isinstance(default, dict):
        default = default.get(op)
    custom = raw.get("custom")
    return ParamSpec(
        name=pname,
        type=raw["type"],
        values=tuple(raw.get("values", ())),
        min=raw.get("min"),
        max=raw.get("max"),
        max_length=raw.get("max_length"),
        required=bool(raw.get("required", False)),
        default=default,
        upstream_default=raw.get("upstream_default", default),
        requires={k: tuple(v) for k, v in raw.get("requires", {}).items()},
        value_requires={
            value: {k: tuple(v) for k, v in needs.items()}
            for value, needs in raw.get("value_requires", {}).items()
        },
        custom=SizeRule(**custom) if custom else None,
        max_message=raw.get("max_message"),
        max_code=raw.get("max_code", "integer_above_max_value"),
        properties={key: _param(f"{pname}.{key}", sub, op) for key, sub in raw.get("properties", {}).items()},
    )


def _overlay(raw: Mapping[str, Any] | None) -> MaskLimits | None:
    if raw is None:
        return None
    return MaskLimits(
        formats=tuple(raw.get("formats", ("png",))),
        max_bytes=raw.get("max_bytes", 4 * 1024 * 1024),
        same_size_as_image=bool(raw.get("same_size_as_image", True)),
        alpha_required=bool(raw.get("alpha_required", False)),
        excludes_mask=bool(raw.get("excludes_mask", False)),
    )


def _inputs(raw: Mapping[str, Any]) -> Inputs:
    image = raw["image"]
    return Inputs(
        image=ImageLimits(
            max_count=image.get("max_count", 1),
            formats=tuple(image.get("formats", ("png",))),
            max_bytes=image.get("max_bytes", 4 * 1024 * 1024),
            square=bool(image.get("square", False)),
            modes_without_mask=tuple(image.get("modes_without_mask", ())),
        ),
        mask=_overlay(raw.get("mask")),
        markup=_overlay(raw.get("markup")),
    )
