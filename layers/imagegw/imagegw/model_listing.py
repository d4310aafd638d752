"""GET /v1/models and GET /v1/models/{model}: the models this key may use AND this deployment routes.

OpenAI's shapes: `{"object": "list", "data": [model...]}` and a model `{"id", "object": "model", "created",
"owned_by"}`. A name the upstream retired but this deployment serves by translation (dall-e-2, dall-e-3,
gpt-image-1, nova-canvas) carries an `imagegw` extension object: `{"retired": date, "served_by": [the
upstream models its routes ask]}`. SDKs keep unknown fields, so the shape stays OpenAI's.

"Routes" means: the routes document names the model (or its Bedrock-id alias), or its `*` routes go to a
provider of a type that serves the model itself (catalog `upstream_types`: a `*` route to OpenAI does not
make Stability's models servable). The key's `allowed_models` patterns apply to the name as asked, as at
admission. Authentication is the accounts' read of the key (no quota is taken).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from imagegw.accounts.admission import Accounts, model_allowed
from imagegw.domain import ApiResponse, HttpRequest
from imagegw.errors import ModelNotFound, UpstreamError
from imagegw.observability import logger
from imagegw.request.catalog import Catalog, ModelSpec
from imagegw.upstream.config import WILDCARD, RoutesConfig

MAX_NAME = 256  # a longer name is not looked up (nor echoed in full)


class ModelListing:
    def __init__(self, catalog: Catalog, accounts: Accounts, routes: Callable[[], RoutesConfig]) -> None:
        self._catalog = catalog
        self._accounts = accounts
        self._routes = routes  # the current routes document (an SSM source refreshes)

    def list(self, http: HttpRequest) -> ApiResponse:
        caller = self._accounts.authenticate(http.authorization)
        config = self._config()
        data = [
            model_object(spec, name, config)
            for name in self._catalog.names()
            if (spec := self._catalog.entry(name)) is not None
            and model_allowed(caller, name)
            and routed(spec, name, config)
        ]
        return _json({"object": "list", "data": data})

    def retrieve(self, http: HttpRequest, model: str) -> ApiResponse:
        name = unquote(model)
        caller = self._accounts.authenticate(http.authorization)
        if len(name) > MAX_NAME:
            raise ModelNotFound(name[:MAX_NAME] + "...")
        try:
            spec = self._catalog.get(name)
        except ModelNotFound:
            raise ModelNotFound(name) from None
        config = self._config()
        if not (model_allowed(caller, name) and routed(spec, name, config)):
            raise ModelNotFound(name)
        return _json(model_object(spec, name, config))

    def _config(self) -> RoutesConfig:
        try:
            return self._routes()
        except Exception as exc:  # an unreadable SSM routes parameter: the same 502 as an image request
            logger.error("upstream routes unavailable", extra={"error": type(exc).__name__})
            raise UpstreamError("The gateway's upstream configuration is not available.") from None


def routed(spec: ModelSpec, name: str, config: RoutesConfig) -> bool:
    """Does this deployment's routes document serve the model under this name."""
    for routed_name in (name, spec.canonical):
        if config.models.get(routed_name):
            return True
    wildcard = config.models.get(WILDCARD, ())
    types = {config.providers[r.provider].type for r in wildcard if r.provider in config.providers}
    return bool(types & spec.listing.upstream_types)


def model_object(spec: ModelSpec, name: str, config: RoutesConfig) -> dict[str, Any]:
    listing = spec.listing
    item: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": listing.created,
        "owned_by": listing.owned_by,
    }
    if listing.retired:
        routes = config.models.get(name) or config.models.get(spec.canonical) or ()
        served_by = sorted({r.model for r in routes if r.model not in (WILDCARD, name, spec.canonical)})
        item["imagegw"] = {"retired": listing.retired, "served_by": served_by}
    return item


def _json(doc: dict[str, Any]) -> ApiResponse:
    return ApiResponse(200, json.dumps(doc), headers={"cache-control": "no-store"})
