"""Routes as data: which upstream serves each client-facing model, and how requests are translated.

The document (the shipped `routes.json`, a file, or an SSM parameter; see docs/upstreams.md):

    {
      "providers": {"<name>": {"type": "openai"|"azure"|..., "base_url" | "endpoint": "...",
                               "api_version"?: "...", "credential"?: "<name in the secret>", ...}},
      "translations": {"<name>": {"map"?: {"<param>": {"<from>": "<to>"}}, "style_prompt"?: {...},
                                  "revised_prompt"?: bool, "resize_to_requested"?: bool,
                                  "mask_from_image"?: bool, "set"?: {...},
                                  "<operation>"?: {"operation": "...", "prompt"?: "..."}}},
      "models": {"<client model>" | "*": [{"provider": "...", "model": "<upstream model>" | "*",
                                            "deployment"?: "...", "weight"?: 1, "priority"?: n,
                                            "translate"?: "<name>" | {...}, "operations"?: [...]}]},
      "resilience"?: {"failures_before_cooldown": 3, "backoff_base_seconds": 0.5,
                      "backoff_max_seconds": 8}
    }
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from imagegw.domain import OPERATIONS, Operation

SHIPPED_ROUTES = "routes.json"
SSM_PREFIX = "ssm:"
WILDCARD = "*"
_PROVIDER_KEYS = {"type", "base_url", "endpoint", "api_version", "credential"}
_TRANSLATION_FLAGS = ("revised_prompt", "resize_to_requested", "mask_from_image")
_TRANSLATION_KEYS = {"map", "style_prompt", "set", *_TRANSLATION_FLAGS, *OPERATIONS}
_ROUTE_KEYS = {"provider", "model", "weight", "priority", "deployment", "translate", "operations"}


class RoutesError(ValueError):
    """The routes document is malformed; raised where it is loaded, with the path to the bad field."""


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    url: str = ""  # `base_url` (OpenAI-compatible, including /v1) or `endpoint` (Azure)
    api_version: str = ""
    credential: str | None = None  # a key of the upstream secret's JSON
    options: Mapping[str, Any] = field(default_factory=dict)  # anything else, for other provider types


@dataclass(frozen=True)
class OperationOverride:
    """Serve one client operation as another upstream operation, e.g. variations as an edit."""

    operation: Operation
    prompt: str | None = None


@dataclass(frozen=True)
class Translation:
    """How a request for a retired model becomes a request for the route's current model."""

    name: str
    map: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    style_prompt: Mapping[str, str] = field(default_factory=dict)
    revised_prompt: bool = False
    resize_to_requested: bool = False
    mask_from_image: bool = False
    set: Mapping[str, Any] = field(default_factory=dict)
    operations: Mapping[str, OperationOverride] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    provider: str
    model: str  # the upstream model; "*" means the client's model
    weight: float = 1.0
    priority: int = 0
    deployment: str | None = None  # Azure: the deployment name (default: the model)
    translate: Translation | None = None
    operations: frozenset[str] | None = None  # client operations this route serves (None: all)

    def for_model(self, client_model: str) -> Route:
        if self.model != WILDCARD and self.deployment != WILDCARD:
            return self
        model = client_model if self.model == WILDCARD else self.model
        deployment = client_model if self.deployment == WILDCARD else self.deployment
        return Route(
            self.provider, model, self.weight, self.priority, deployment, self.translate, self.operations
        )

    @property
    def target(self) -> str:
        """What the provider is asked for: the deployment where one is named, else the model."""
        return self.deployment or self.model

    @property
    def label(self) -> str:
        """For logs, metrics and the usage log: never a host or a secret."""
        return f"{self.provider}:{self.target}"

    def serves(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations


@dataclass(frozen=True)
class Resilience:
    failures_before_cooldown: int = 3
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 8.0


@dataclass(frozen=True)
class RoutesConfig:
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, tuple[Route, ...]]
    resilience: Resilience = Resilience()

    def routes_for(self, model: str, operation: str) -> list[Route]:
        routes = self.models.get(model)
        if routes is None:
            routes = self.models.get(WILDCARD, ())
        return [r.for_model(model) for r in routes if r.serves(operation)]


# --------------------------------------------------------------------------------------------------
# Parsing


def parse_routes(doc: Any, provider_types: Collection[str]) -> RoutesConfig:
    """A RoutesConfig from the JSON document, or RoutesError naming the bad field."""
    if not isinstance(doc, dict):
        raise RoutesError("the routes document must be a JSON object")
    providers = {
        name: _provider(name, raw, provider_types)
        for name, raw in _obj(doc.get("providers"), "providers", required=True).items()
    }
    translations = {
        name: _translation(name, raw, f"translations.{name}")
        for name, raw in _obj(doc.get("translations"), "translations").items()
    }
    models: dict[str, tuple[Route, ...]] = {}
    for model, raw_routes in _obj(doc.get("models"), "models", required=True).items():
        where = f"models.{model}"
        if not isinstance(raw_routes, list) or not raw_routes:
            raise RoutesError(f"{where} must be a non-empty list of routes")
        routes = [
            _route(raw, f"{where}[{i}]", providers, translations, position=i + 1)
            for i, raw in enumerate(raw_routes)
        ]
        models[model] = tuple(routes)
    return RoutesConfig(providers, models, _resilience(doc.get("resilience")))


def _obj(value: Any, where: str, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or (required and not value):
        raise RoutesError(f"{where} must be a {'non-empty ' if required else ''}JSON object")
    return value


def _no_unknown_keys(raw: Mapping[str, Any], known: Collection[str], where: str) -> None:
    unknown = sorted(k for k in raw if k not in known and not k.startswith("_"))
    if unknown:
        listed = ", ".join(sorted(known))
        raise RoutesError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {listed})")


def _str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise RoutesError(f"{where}.{key} must be a non-empty string")
    return value


def _required_str(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(raw, key, where)
    if value is None:
        raise RoutesError(f"{where}.{key} is required")
    return value


def _provider(name: str, raw: Any, provider_types: Collection[str]) -> ProviderConfig:
    where = f"providers.{name}"
    raw = _obj(raw, where, required=True)
    kind = _required_str(raw, "type", where)
    if kind not in provider_types:
        known = ", ".join(sorted(provider_types))
        raise RoutesError(f"{where}.type {kind!r} is not a known provider type ({known})")
    url = _str(raw, "base_url", where) or _str(raw, "endpoint", where) or ""
    if url and not url.startswith(("https://", "http://")):
        raise RoutesError(f"{where}: the base_url/endpoint must start with https:// or http://")
    return ProviderConfig(
        name=name,
        type=kind,
        url=url.rstrip("/"),
        api_version=_str(raw, "api_version", where) or "",
        credential=_str(raw, "credential", where),
        options={k: v for k, v in raw.items() if k not in _PROVIDER_KEYS},
    )


def _translation(name: str, raw: Any, where: str) -> Translation:
    raw = _obj(raw, where, required=False)
    _no_unknown_keys(raw, _TRANSLATION_KEYS, where)
    maps = _obj(raw.get("map"), f"{where}.map")
    for param, table in maps.items():
        _obj(table, f"{where}.map.{param}", required=True)
    style = _obj(raw.get("style_prompt"), f"{where}.style_prompt")
    if any(not isinstance(v, str) for v in style.values()):
        raise RoutesError(f"{where}.style_prompt values must be strings")
    flags = {}
    for flag in _TRANSLATION_FLAGS:
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            raise RoutesError(f"{where}.{flag} must be true or false")
        flags[flag] = value
    operations: dict[str, OperationOverride] = {}
    for op in OPERATIONS:
        if op not in raw:
            continue
        spec = _obj(raw[op], f"{where}.{op}", required=True)
        target = spec.get("operation", op)
        if target not in OPERATIONS:
            raise RoutesError(f"{where}.{op}.operation must be one of {', '.join(OPERATIONS)}")
        operations[op] = OperationOverride(target, _str(spec, "prompt", f"{where}.{op}"))
    return Translation(
        name=name,
        map={p: dict(t) for p, t in maps.items()},
        style_prompt=dict(style),
        set=dict(_obj(raw.get("set"), f"{where}.set")),
        operations=operations,
        **flags,
    )


def _route(
    raw: Any,
    where: str,
    providers: Mapping[str, ProviderConfig],
    translations: Mapping[str, Translation],
    *,
    position: int,
) -> Route:
    raw = _obj(raw, where, required=True)
    _no_unknown_keys(raw, _ROUTE_KEYS, where)
    provider = _required_str(raw, "provider", where)
    if provider not in providers:
        raise RoutesError(f"{where}.provider {provider!r} is not defined under providers")
    model = _required_str(raw, "model", where)
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise RoutesError(f"{where}.weight must be a number >= 0")
    priority = raw.get("priority", position)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RoutesError(f"{where}.priority must be an integer")
    translate_raw = raw.get("translate")
    translate: Translation | None = None
    if isinstance(translate_raw, str):
        if translate_raw not in translations:
            raise RoutesError(f"{where}.translate {translate_raw!r} is not defined under translations")
        translate = translations[translate_raw]
    elif isinstance(translate_raw, dict):
        translate = _translation(f"{where}.translate", translate_raw, f"{where}.translate")
    elif translate_raw is not None:
        raise RoutesError(f"{where}.translate must be a translation name or an object")
    ops_raw = raw.get("operations")
    operations: frozenset[str] | None = None
    if ops_raw is not None:
        if not isinstance(ops_raw, list) or not ops_raw or any(op not in OPERATIONS for op in ops_raw):
            raise RoutesError(f"{where}.operations must be a non-empty list of {', '.join(OPERATIONS)}")
        operations = frozenset(ops_raw)
    return Route(
        provider=provider,
        model=model,
        weight=float(weight),
        priority=priority,
        deployment=_str(raw, "deployment", where),
        translate=translate,
        operations=operations,
    )


def _resilience(raw: Any) -> Resilience:
    raw = _obj(raw, "resilience")
    values: dict[str, Any] = {}
    for key, kind in (
        ("failures_before_cooldown", int),
        ("backoff_base_seconds", float),
        ("backoff_max_seconds", float),
    ):
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise RoutesError(f"resilience.{key} must be a positive number")
        values[key] = kind(value)
    return Resilience(**values)


# --------------------------------------------------------------------------------------------------
# Loading


def shipped_routes_document() -> dict[str, Any]:
    """The routes.json shipped in this package (a fresh copy the caller may change)."""
    text = resources.files(__package__).joinpath(SHIPPED_ROUTES).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


class RoutesSource:
    """Where the routes come from (`settings.routes_source`), loaded lazily and cached.

    "" is the shipped file, a path is a file (both read once), "ssm:/name" an SSM parameter read with
    Powertools parameters (cached `max_age` seconds, then re-read: a change applies without a redeploy).
    """

    def __init__(
        self,
        source: str,
        provider_types: Collection[str],
        *,
        ssm_client: Any = None,
        max_age: int = 300,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.source = source.strip()
        self._types = provider_types
        self._ssm_client = ssm_client
        self._ssm: Any = None
        self._max_age = max_age
        self._on_error = on_error
        self._raw: Any = None
        self._config: RoutesConfig | None = None

    @property
    def is_ssm(self) -> bool:
        return self.source.startswith(SSM_PREFIX)

    def load_now(self) -> RoutesConfig:
        """Read and validate at once (files: at cold start, so a bad file fails the deploy's first call)."""
        return self.get()

    def get(self) -> RoutesConfig:
        if not self.is_ssm:
            if self._config is None:
                doc = self._read_file()
                self._config = parse_routes(doc, self._types)
            return self._config
        try:
            raw = self._read_ssm()
        except Exception as exc:
            if self._config is None:
                raise
            if self._on_error is not None:
                self._on_error(exc)
            return self._config  # keep serving the last good routes
        if raw is not self._raw or self._config is None:
            config = parse_routes(raw, self._types)
            self._raw, self._config = raw, config
        return self._config

    def _read_file(self) -> Any:
        if not self.source:
            return shipped_routes_document()
        path = Path(self.source)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RoutesError(f"cannot read the routes file {self.source!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise RoutesError(f"the routes file {self.source!r} is not valid JSON: {exc}") from None

    def _read_ssm(self) -> Any:
        from aws_lambda_powertools.utilities.parameters import SSMProvider

        if self._ssm is None:
            self._ssm = SSMProvider(boto3_client=self._ssm_client)
        name = self.source[len(SSM_PREFIX) :]
        return self._ssm.get(name, max_age=self._max_age, transform="json", decrypt=True)
