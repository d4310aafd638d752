"""What the pipeline asks of the accounts side: who is calling, may they, and what did they use.

The service calls `authenticate`, then `admit` before the upstream call and `settle` exactly once after it.

- authenticate: the key item is read (strongly consistent, never cached) on every request: 401 for a
  missing, wrong, revoked or expired key.
- admit: 403 when the key may not use the model; 429 `rate_limit_exceeded` (with `retry-after`) over the
  key's requests per minute; 429 `insufficient_quota` when the images or estimated credits would exceed
  the key's quota. The quota is reserved with one conditional write before the upstream is called.
- settle: refunds the reservation when the request failed, corrects it to the actual cost when it
  succeeded, adds to the per-day (and per-model) usage counters and writes one usage-log record. These
  are up to three independent writes to three different items: they are issued concurrently (one round
  trip of latency, not three) and all waited for before settle returns. It never raises: the response is
  already decided when it runs, so a metering failure is logged, not turned into an error.

Raw keys never reach a log line; logs name the key by its display form (`sk-AbC...wxyz`) and key id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from imagegw.accounts.keys import KeyStore
from imagegw.accounts.pricing import Cost, PriceTable
from imagegw.accounts.quota import QuotaLedger, RateLimiter
from imagegw.accounts.usage import UsageEvent, UsageRecorder
from imagegw.domain import Caller, ImageRequest, UpstreamResult
from imagegw.errors import ApiError, ModelNotAllowed
from imagegw.observability import logger
from imagegw.settings import Settings

# Settle's writes other than the first. A Lambda container serves one request at a time (two threads are
# ever started there); the local stack runs several containers in one process. Threads start on demand.
_WRITES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="imagegw-settle")


@dataclass
class Admission:
    caller: Caller
    request: ImageRequest
    request_id: str
    reserved_images: int = 0
    reserved_credits: Decimal = Decimal(0)
    admitted_at: float = 0.0
    reserved: bool = False  # the counters on the key item hold this reservation
    settled: bool = False


@dataclass
class Outcome:
    status: int
    latency_ms: int
    result: UpstreamResult | None = None  # None when the request failed: reserved quota is refunded
    error_code: str | None = None


class Accounts:
    def __init__(
        self,
        keys: KeyStore,
        *,
        usage_table: Any = None,
        clock: Callable[[], float] = time.time,
        log_prompts: bool = False,
        prices: PriceTable | None = None,
        log_retention_days: int = 30,
        usage_retention_days: int = 400,
    ) -> None:
        """`keys` wraps the keys table; without `usage_table` there is no rate limiting or metering."""
        self._keys = keys
        self._clock = clock
        self._log_prompts = log_prompts
        self._prices = prices or PriceTable.load()
        self._ledger = QuotaLedger(keys.table, clock)
        self._rate = RateLimiter(usage_table, clock) if usage_table is not None else None
        self._usage = (
            UsageRecorder(
                usage_table, log_retention_days=log_retention_days, usage_retention_days=usage_retention_days
            )
            if usage_table is not None
            else None
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, dynamodb_resource: Any, *, clock: Callable[[], float] = time.time
    ) -> Accounts:
        """Build from settings and a boto3 DynamoDB resource; makes no AWS call."""
        return cls(
            KeyStore(dynamodb_resource.Table(settings.keys_table), clock),
            usage_table=dynamodb_resource.Table(settings.usage_table),
            clock=clock,
            log_prompts=settings.log_prompts,
        )

    @property
    def prices(self) -> PriceTable:
        return self._prices

    def authenticate(self, authorization: str | None) -> Caller:
        return self._keys.authenticate(authorization)

    def check_model(self, caller: Caller, model: str, request_id: str) -> None:
        """403 when the key may not use the model: at admission, and before an async job is queued."""
        if not model_allowed(caller, model):
            _refused(caller, request_id, "model_not_allowed")
            raise ModelNotAllowed(f"This API key is not allowed to use the model '{model}'.", param="model")

    def admit(self, caller: Caller, request: ImageRequest, request_id: str) -> Admission:
        self.check_model(caller, request.model, request_id)
        images = request.n
        credits = self._prices.estimate_cents(request.model, request.params, images)
        try:
            if self._rate is not None:
                self._rate.hit(caller)
            reservation = self._ledger.reserve(caller, images, credits)
        except ApiError as exc:
            _refused(caller, request_id, exc.code)
            raise
        return Admission(
            caller,
            request,
            request_id,
            reserved_images=reservation.images,
            reserved_credits=reservation.credits,
            admitted_at=self._clock(),
            reserved=True,
        )

    def settle(self, admission: Admission, outcome: Outcome) -> None:
        if admission.settled:
            logger.warning("admission settled twice; ignored", extra=_log_keys(admission))
            return
        admission.settled = True
        request, result = admission.request, outcome.result
        if result is not None:
            cost = self._prices.cost(request.model, request.params, result)
        else:
            cost = Cost(0, 0, 0, Decimal(0))
        try:
            failures = _write_concurrently(self._settle_writes(admission, outcome, cost))
        except Exception:
            logger.exception("could not settle", extra=_log_keys(admission))
            return
        for what, error in failures:
            logger.error(f"could not {what}", exc_info=error, extra=_log_keys(admission))

    def _settle_writes(
        self, admission: Admission, outcome: Outcome, cost: Cost
    ) -> list[tuple[str, Callable[[], None]]]:
        """The independent writes of settle (three items: key, usage day, usage log), as (what, call)."""
        writes: list[tuple[str, Callable[[], None]]] = []
        images = cost.images - admission.reserved_images
        credits = cost.cents - admission.reserved_credits
        if admission.reserved and (images or credits):
            key_hash = admission.caller.key_hash
            writes.append(
                ("settle the quota reservation", lambda: self._ledger.adjust(key_hash, images, credits))
            )
        if self._usage is not None:
            usage, event = self._usage, self._event(admission, outcome, cost)
            writes.append(("record the usage counters", lambda: usage.add_counters(event)))
            writes.append(("write the usage log record", lambda: usage.put_log(event)))
        return writes

    def _event(self, admission: Admission, outcome: Outcome, cost: Cost) -> UsageEvent:
        request, result = admission.request, outcome.result
        meta = result.meta if result is not None else {}
        size = meta.get("size") or request.params.get("size")
        quality = meta.get("quality") or request.params.get("quality")
        prompt = request.params.get("prompt") if self._log_prompts else None
        return UsageEvent(
            key_id=admission.caller.key_id,
            request_id=admission.request_id,
            model=request.model,
            operation=request.operation,
            status=outcome.status,
            latency_ms=outcome.latency_ms,
            at=admission.admitted_at or self._clock(),
            images=cost.images,
            input_tokens=cost.input_tokens,
            output_tokens=cost.output_tokens,
            cost_cents=cost.cents,
            n=request.n,
            size=str(size) if size else None,
            quality=str(quality) if quality else None,
            stream=request.stream,
            upstream_route=(result.route or None) if result is not None else None,
            error_code=outcome.error_code if result is None else None,
            prompt=str(prompt) if prompt else None,
            ok=result is not None,
        )


def _write_concurrently(writes: list[tuple[str, Callable[[], None]]]) -> list[tuple[str, Exception]]:
    """Run independent writes at once (the first on this thread, the others on the pool) and wait for all
    of them: nothing may still be running when Lambda freezes the container after the response.
    Returns the writes that failed, with their errors.
    """
    pending = [(what, _WRITES.submit(write)) for what, write in writes[1:]]
    failures: list[tuple[str, Exception]] = []
    for what, write in writes[:1]:
        try:
            write()
        except Exception as exc:
            failures.append((what, exc))
    for what, future in pending:
        try:
            future.result()
        except Exception as exc:
            failures.append((what, exc))
    return failures


def model_allowed(caller: Caller, model: str) -> bool:
    """`allowed_models` holds names or fnmatch patterns (`gpt-image-*`); absent allows every model."""
    if caller.allowed_models is None:
        return True
    return any(fnmatchcase(model, pattern) for pattern in caller.allowed_models)


def _refused(caller: Caller, request_id: str, code: str | None) -> None:
    logger.info(
        "request refused",
        extra={"key": caller.display, "key_id": caller.key_id, "request_id": request_id, "code": code},
    )


def _log_keys(admission: Admission) -> dict[str, Any]:
    return {
        "key": admission.caller.display,
        "key_id": admission.caller.key_id,
        "request_id": admission.request_id,
    }
