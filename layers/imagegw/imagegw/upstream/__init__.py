"""The upstream layer: routes (data), providers (HTTP), translation, retries, failover and cool-down.

    router = build_router(settings, catalog, secrets_client=..., ssm_client=...)
    result = router.call(request, deadline=time.monotonic() + 25)

Nothing here calls AWS when built: routes from SSM and credentials from Secrets Manager load on first use
(a routes *file* is read and validated at once, so a bad file fails at cold start).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from imagegw.observability import logger
from imagegw.upstream.config import (
    Route,
    RoutesConfig,
    RoutesError,
    RoutesSource,
    parse_routes,
    shipped_routes_document,
)
from imagegw.upstream.credentials import Credentials
from imagegw.upstream.failures import (
    RouteFault,
    TransientFailure,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamRejected,
)
from imagegw.upstream.provider_types import PROVIDER_TYPES
from imagegw.upstream.providers import AzureOpenAIProvider, OpenAIProvider, Provider, ProviderContext
from imagegw.upstream.resilience import COOLDOWNS, CooldownTracker
from imagegw.upstream.router import Router
from imagegw.upstream.translation import Plan, UpstreamCall

if TYPE_CHECKING:
    from imagegw.request.catalog import Catalog
    from imagegw.settings import Settings
    from imagegw.upstream.bedrock import BedrockProvider

__all__ = [
    "COOLDOWNS",
    "PROVIDER_TYPES",
    "AzureOpenAIProvider",
    "BedrockProvider",
    "CooldownTracker",
    "Credentials",
    "OpenAIProvider",
    "Plan",
    "Provider",
    "ProviderContext",
    "Route",
    "RouteFault",
    "Router",
    "RoutesConfig",
    "RoutesError",
    "TransientFailure",
    "UpstreamCall",
    "UpstreamFailure",
    "UpstreamMalformed",
    "UpstreamRejected",
    "build_router",
    "new_http_session",
    "parse_routes",
    "shipped_routes_document",
]


def __getattr__(name: str) -> Any:
    """`BedrockProvider` is exported but loaded on first use: Bedrock's code stays out of the cold start."""
    if name == "BedrockProvider":
        from imagegw.upstream.bedrock import BedrockProvider

        return BedrockProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_http_session() -> requests.Session:
    """A pooled session without urllib3 retries (the router retries, within the deadline)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def build_router(
    settings: Settings,
    catalog: Catalog,
    *,
    secrets_client: Any = None,
    ssm_client: Any = None,
    http_session: requests.Session | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    cooldowns: CooldownTracker | None = None,
    clients: dict[str, Any] | None = None,
) -> Router:
    """The Router for this container. `clock` must be the clock `deadline` values come from; `sleep`,
    `rng` and `cooldowns` (default: the module-level, per-container state) are injectable for tests."""
    context = ProviderContext(
        session=http_session if http_session is not None else new_http_session(),
        credentials=Credentials(settings.upstream_secret_id, secrets_client=secrets_client),
        clients=clients or {},
    )
    source = RoutesSource(
        settings.routes_source,
        PROVIDER_TYPES,
        ssm_client=ssm_client,
        on_error=lambda exc: logger.error(
            "could not refresh the upstream routes; keeping the last good ones",
            extra={"error": type(exc).__name__},
        ),
    )
    router = Router(
        routes=source,
        catalog=catalog,
        context=context,
        max_attempts=settings.max_attempts,
        attempt_timeout=settings.attempt_timeout_seconds,
        cooldown_seconds=settings.cooldown_seconds,
        cooldowns=cooldowns if cooldowns is not None else COOLDOWNS,
        clock=clock,
        sleep=sleep,
        rng=rng,
    )
    if not source.is_ssm:
        router.table()  # a routes file is local: validate it (and build its providers) at cold start
    return router
