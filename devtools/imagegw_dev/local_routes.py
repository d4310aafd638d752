"""The shipped upstream routes, pointed at the local upstream emulator (or another local upstream)."""

from __future__ import annotations

import copy
from typing import Any

from imagegw.upstream import shipped_routes_document


def local_routes(upstream_url: str, upstream_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """For the local stack: the shipped routes pointed at `upstream_url` (an OpenAI-compatible base URL,
    with /v1), and the upstream secret's JSON holding `upstream_key` for it."""
    doc = copy.deepcopy(shipped_routes_document())
    for provider in doc["providers"].values():
        if provider.get("type") == "openai":
            provider["base_url"] = upstream_url.rstrip("/")
            if upstream_key:
                provider["credential"] = "openai"
            else:
                provider.pop("credential", None)
    credentials = {"openai": {"api_key": upstream_key}} if upstream_key else {}
    return doc, credentials
