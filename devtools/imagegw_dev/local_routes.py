"""The shipped upstream routes, pointed at the local upstream emulator (or another local upstream), plus a
Bedrock provider on the emulator for every Bedrock model of the catalog, so that every model
GET /v1/models lists locally can be tried locally."""

from __future__ import annotations

import copy
from typing import Any

from imagegw.request.catalog import Catalog
from imagegw.upstream import shipped_routes_document

BEDROCK = "bedrock"
CORE = "stability.stable-image-core-v1:1"
INPAINT = "stability.stable-image-inpaint-v1:0"
# The models whose operations go to different Bedrock models (the docs/upstreams.md example): Stable Image
# Core's masked edits are Stability's inpainting service, and the retired Nova Canvas name is served by
# its Stability successors.
SPLIT_ROUTES: dict[str, list[dict[str, Any]]] = {
    "stable-image-core": [
        {"provider": BEDROCK, "model": CORE, "operations": ["generations"]},
        {"provider": BEDROCK, "model": INPAINT, "operations": ["edits"]},
    ],
    "nova-canvas": [
        {"provider": BEDROCK, "model": CORE, "operations": ["generations"]},
        {"provider": BEDROCK, "model": INPAINT, "operations": ["edits"]},
        {
            "provider": BEDROCK,
            "model": "stability.sd3-5-large-v1:0",
            "operations": ["variations"],
            "translate": "nova-canvas-variations",
        },
    ],
}


def local_routes(
    upstream_url: str, upstream_key: str, bedrock_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """For the local stack: the shipped routes pointed at `upstream_url` (an OpenAI-compatible base URL,
    with /v1), and the upstream secret's JSON holding `upstream_key` for it. With `bedrock_url` (the
    emulator's base URL), the catalog's Bedrock models are routed to it as well."""
    doc = copy.deepcopy(shipped_routes_document())
    for provider in doc["providers"].values():
        if provider.get("type") == "openai":
            provider["base_url"] = upstream_url.rstrip("/")
            if upstream_key:
                provider["credential"] = "openai"
            else:
                provider.pop("credential", None)
    if bedrock_url:
        add_bedrock_routes(doc, bedrock_url)
    credentials = {"openai": {"api_key": upstream_key}} if upstream_key else {}
    return doc, credentials


def add_bedrock_routes(doc: dict[str, Any], endpoint_url: str) -> None:
    doc["providers"][BEDROCK] = {"type": "bedrock", "region": "us-west-2", "endpoint_url": endpoint_url}
    catalog = Catalog.load()
    for name in catalog.names():
        spec = catalog.get(name)
        if BEDROCK not in spec.listing.upstream_types or name in doc["models"]:
            continue
        if name in SPLIT_ROUTES:
            doc["models"][name] = copy.deepcopy(SPLIT_ROUTES[name])
        elif not spec.listing.retired:  # a retired name is served only where a split route says how
            doc["models"][name] = [{"provider": BEDROCK, "model": spec.listing.aliases[0]}]
