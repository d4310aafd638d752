"""The Router: a client request -> routes in failover order -> attempts with retries, within a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from imagegw.domain import ImageRequest, UpstreamResult
from imagegw.errors import ApiError, InvalidRequest, RequestTooLarge, UpstreamError, UpstreamTimeout
from imagegw.observability import logger
from imagegw.upstream.config import Route, RoutesConfig, RoutesSource
from imagegw.upstream.failures import RouteFault, TransientFailure, UpstreamFailure, UpstreamRejected
from imagegw.upstream.provider_types import PROVIDER_TYPES
from imagegw.upstream.providers import Provider, ProviderContext
from imagegw.upstream.resilience import CooldownTracker, backoff_delay, order_routes
from imagegw.upstream.translation import Plan, UpstreamCall, finish, prepare
from imagegw.upstream.wire import scrub

if TYPE_CHECKING:
    from imagegw.request.catalog import Catalog

# Stop this long before the caller's deadline: time to decode, resize and hand the result back.
DEADLINE_MARGIN_S = 0.25
# An attempt with less time than this is not started.
MIN_ATTEMPT_S = 0.2


@dataclass
class _Table:
    config: RoutesConfig
    providers: Mapping[str, Provider]


class Router:
    def __init__(
        self,
        *,
        routes: RoutesSource,
        catalog: Catalog,
        context: ProviderContext,
        max_attempts: int = 3,
        attempt_timeout: float = 120.0,
        cooldown_seconds: float = 30.0,
        cooldowns: CooldownTracker,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        margin: float = DEADLINE_MARGIN_S,
    ) -> None:
        self._routes = routes
        self._catalog = catalog
        self._context = context
        self.max_attempts = max(1, max_attempts)
        self.attempt_timeout = attempt_timeout
        self.cooldown_seconds = cooldown_seconds
        self.cooldowns = cooldowns
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._margin = margin
        self._table: _Table | None = None

    # ----- configuration -----------------------------------------------------------------------------

    def table(self) -> _Table:
        """The routes and their providers, rebuilt when the routes document changed (SSM source)."""
        config = self._routes.get()
        if self._table is None or self._table.config is not config:
            providers = {
                name: PROVIDER_TYPES[cfg.type](cfg, self._context) for name, cfg in config.providers.items()
            }
            self._table = _Table(config, providers)
        return self._table

    def _current_table(self) -> _Table:
        try:
            return self.table()
        except Exception as exc:
            logger.error(
                "upstream routes unavailable", extra={"error": type(exc).__name__, "detail": scrub(str(exc))}
            )
            raise UpstreamError("The gateway's upstream configuration is not available.") from None

    # ----- the call ----------------------------------------------------------------------------------

    def call(self, request: ImageRequest, *, deadline: float) -> UpstreamResult:
        """Serve the request from the first route that can, within `deadline` (a time.monotonic() value).

        A failure says whether any attempt may have been billed (`UpstreamError.maybe_billed`)."""
        table = self._current_table()
        tally = _Tally()
        for route in self._ordered_routes(table, request):
            plan = prepare(request, route, self._catalog)
            result = self._try_route(table, route, plan, deadline, tally)
            if result is not None:
                return replace(result, route=route.label, model=route.model)
        raise self._exhausted(tally)

    def _ordered_routes(self, table: _Table, request: ImageRequest) -> list[Route]:
        """The routes serving this model and operation, in failover order, those cooling down last."""
        candidates = table.config.routes_for(self._routed_name(table, request.model), request.operation)
        if not candidates:
            logger.error(
                "no upstream route for model", extra={"model": request.model, "operation": request.operation}
            )
            raise UpstreamError("No upstream is configured for this model.")
        routes, skipped = self.cooldowns.plan(order_routes(candidates, self._rng))
        if skipped:
            logger.info("skipping routes in cool-down", extra={"skipped": [r.label for r in skipped]})
        if routes and self.cooldowns.cooling(routes[0].label):
            logger.warning(
                "every route is cooling down; trying the least recently failed one",
                extra={"upstream_route": routes[0].label},
            )
        return routes

    def _routed_name(self, table: _Table, model: str) -> str:
        """A Bedrock-id alias (`stability.sd3-5-large-v1:0`) takes its catalog entry's routes unless the
        routes document names the alias itself; dated snapshots keep their own name (the `*` routes)."""
        if model in table.config.models:
            return model
        try:
            spec = self._catalog.get(model)
        except ApiError:
            return model
        return spec.canonical if model in spec.listing.aliases else model

    def _try_route(
        self, table: _Table, route: Route, plan: Plan, deadline: float, tally: _Tally
    ) -> UpstreamResult | None:
        """Attempts on one route: its result, or None when the call goes on to the next route (`tally`
        keeps the last failure, and whether any attempt may have been billed)."""
        provider = table.providers[route.provider]
        resilience = table.config.resilience
        for attempt in range(1, self.max_attempts + 1):
            timeout = min(self.attempt_timeout, deadline - self._clock() - self._margin)
            if timeout < MIN_ATTEMPT_S:
                raise self._out_of_time(tally)
            started = self._clock()
            try:
                result = finish(_send(provider, plan.call, timeout), plan)
            except UpstreamRejected as exc:
                self._log(route, attempt, exc.status, started, "rejected", exc)
                raise _client_error(exc) from None
            except UpstreamFailure as exc:
                tally.failed(exc)
                if not self._after_failure(route, attempt, started, exc, deadline, resilience):
                    return None
                continue
            except ApiError:
                raise
            except Exception as exc:  # a bug, or an answer nothing above expected: not the client's fault
                self._failed(route, resilience.failures_before_cooldown)
                tally.failed(self._unexpected(route, attempt, exc))
                return None
            self.cooldowns.success(route.label)
            self._log(route, attempt, 200, started, "ok")
            return result
        return None

    def _after_failure(
        self,
        route: Route,
        attempt: int,
        started: float,
        exc: UpstreamFailure,
        deadline: float,
        resilience: Any,
    ) -> bool:
        """Count the failure; True (after the backoff wait) to retry this route, False to fail over."""
        if isinstance(exc, TransientFailure):
            self._failed(route, resilience.failures_before_cooldown)
            wait = self._wait_before_retry(
                exc, attempt, deadline, resilience.backoff_base_seconds, resilience.backoff_max_seconds
            )
            self._log(route, attempt, exc.status, started, "retry" if wait is not None else "failover", exc)
            if wait is None:
                return False
            self._sleep(wait)
            return True
        self._failed(route, resilience.failures_before_cooldown)
        if isinstance(exc, RouteFault) and exc.credentials_suspect:
            self._context.credentials.invalidate()
        self._log(route, attempt, exc.status, started, "failover", exc)
        return False

    def _unexpected(self, route: Route, attempt: int, exc: Exception) -> RouteFault:
        logger.error(
            "unexpected upstream failure",
            extra={
                "upstream_route": route.label,
                "attempt": attempt,
                "error": type(exc).__name__,
                "detail": scrub(str(exc)),
            },
        )
        # Unknown: the request may have gone out and been answered (the ledger rule assumes billed).
        return RouteFault("Unexpected failure handling the upstream answer.", sent=True)

    # ----- helpers -----------------------------------------------------------------------------------

    def _wait_before_retry(
        self, exc: TransientFailure, attempt: int, deadline: float, base: float, cap: float
    ) -> float | None:
        """Seconds to sleep before the next attempt on this route; None to fail over instead."""
        if attempt >= self.max_attempts or not exc.retryable:
            return None
        wait = (
            exc.retry_after
            if exc.retry_after is not None
            else backoff_delay(attempt, base=base, cap=cap, rng=self._rng)
        )
        if self._clock() + wait + MIN_ATTEMPT_S > deadline - self._margin:
            return None  # the wait does not fit in the deadline: another route may still answer
        return wait

    def _failed(self, route: Route, threshold: int) -> None:
        if self.cooldowns.failure(route.label, threshold=threshold, seconds=self.cooldown_seconds):
            logger.warning(
                "upstream route cooling down",
                extra={"upstream_route": route.label, "cooldown_seconds": self.cooldown_seconds},
            )

    def _log(
        self,
        route: Route,
        attempt: int,
        status: int | None,
        started: float,
        outcome: str,
        failure: UpstreamFailure | None = None,
    ) -> None:
        fields = {
            "upstream_route": route.label,
            "attempt": attempt,
            "status": status,
            "latency_ms": int((self._clock() - started) * 1000),
            "outcome": outcome,
        }
        if failure is not None:
            fields["failure"] = type(failure).__name__
            fields["detail"] = scrub(failure.message)  # our own wording; scrubbed all the same
        if outcome == "ok":
            logger.info("upstream attempt", extra=fields)
        else:
            logger.warning("upstream attempt", extra=fields)

    def _out_of_time(self, tally: _Tally) -> ApiError:
        last = tally.last
        if last is None or (isinstance(last, TransientFailure) and last.timed_out):
            return UpstreamTimeout(maybe_billed=tally.billed)
        return UpstreamError(maybe_billed=tally.billed)

    def _exhausted(self, tally: _Tally) -> ApiError:
        last = tally.last
        if isinstance(last, TransientFailure) and last.timed_out:
            return UpstreamTimeout(maybe_billed=tally.billed)
        return UpstreamError(maybe_billed=tally.billed)


@dataclass
class _Tally:
    """One call's failures so far: the last, and whether any attempt may have been billed."""

    last: UpstreamFailure | None = None
    billed: bool = False

    def failed(self, failure: UpstreamFailure) -> None:
        self.last = failure
        self.billed = self.billed or failure.sent


def _send(provider: Provider, call: UpstreamCall, timeout: float) -> UpstreamResult:
    return provider.call(
        operation=call.operation,
        model=call.model,
        params=call.params,
        images=call.images,
        mask=call.mask,
        stream=call.stream,
        timeout=timeout,
        **({"markup": call.markup} if call.markup is not None else {}),
    )


def _client_error(exc: UpstreamRejected) -> ApiError:
    message = scrub(exc.message)
    if exc.status == 413:
        return RequestTooLarge(message, param=exc.param, code=exc.code or "request_too_large")
    return InvalidRequest(message, param=exc.param, code=exc.code)
