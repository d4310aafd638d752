"""What the pipeline asks of the accounts side: may this key do this now, and what did it cost.

Two DynamoDB calls per request (`quota` describes the key item):

- `admit`: ONE conditional UpdateItem of the key item, found by the hash of the raw key. It authenticates
  (401 for a missing, revoked or expired key: the item is written, never cached), applies the rate limit
  (429 `rate_limit_exceeded` with `retry-after`) and, for async jobs, the cap on jobs in flight, reserves
  the quota (429 `insufficient_quota`) and records the reservation as a hold. 403 when the key may not use
  the model: fnmatch patterns cannot be a condition, so that is checked on the item the write returns and
  the write is taken back (the only case with a second write before the upstream).
- `settle`: ONE TransactWriteItems: the key item (the hold removed, the counters moved to the charge;
  conditional on the hold still being there, so it happens at most once per request or job id), the day's
  usage counters and the usage log record (conditional on there being none for the id yet).

`authenticate` (one GetItem) serves what has no admission: GET /v1/images/jobs/{id}, and a request whose
body is refused (401 must come before 400).

THE LEDGER RULE (`ledger_rule`, the one place that decides charge vs refund): the key is charged for what
the upstream produced or may have produced, whatever happens to the answer afterwards (too large, storage
error, deadline, client gone); the reservation is refunded only when no upstream attempt could have been
billed (refused before sending, connection failed before the request was sent, the upstream answered an
error).

Raw keys never reach a log line; logs name the key by its display form (`sk-AbC...wxyz`) and key id.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from botocore.exceptions import ClientError

from imagegw.accounts.keys import MAX_KEY_LENGTH, KeyStore, bearer_token, caller_from_item, hash_key, mask_key
from imagegw.accounts.pricing import Charge, Cost, PriceTable
from imagegw.accounts.quota import (
    STALE_WINDOWS_SWEEP,
    Adjustment,
    Hold,
    KeyLedger,
    check_usable,
    holds_of,
)
from imagegw.accounts.usage import UsageEvent, UsageRecorder
from imagegw.domain import Caller, ImageRequest, UpstreamResult
from imagegw.errors import ApiError, InvalidApiKey, ModelNotAllowed
from imagegw.observability import logger
from imagegw.settings import Settings

NO_COST = Cost(0, 0, 0, Decimal(0))
_CONDITION_FAILED = "ConditionalCheckFailed"  # a transaction item's cancellation reason


@dataclass(frozen=True)
class Credential:
    """A bearer key as admission needs it: its hash (the key item's key) and its masked form."""

    key_hash: str
    display: str


@dataclass
class Admission:
    caller: Caller
    request: ImageRequest
    request_id: str  # the request id, or the job id: the hold's id
    hold: Hold
    stale: list[str] = field(default_factory=list)  # rate windows for settle to remove
    settled: bool = False

    @property
    def reserved_images(self) -> int:
        return self.hold.images

    @property
    def reserved_credits(self) -> Decimal:
        return self.hold.credits

    @property
    def admitted_at(self) -> float:
        return self.hold.at


@dataclass
class Outcome:
    status: int
    latency_ms: int
    result: UpstreamResult | None = None  # what the upstream produced, even when the answer then failed
    error_code: str | None = None
    maybe_billed: bool = False  # no result, but an attempt may have been billed (sent, then timed out)


def ledger_rule(prices: PriceTable, admission: Admission, outcome: Outcome) -> Charge:
    """The ledger rule (module docstring): what the key is charged for this outcome."""
    request, result = admission.request, outcome.result
    if result is not None:
        return prices.charge(request.model, request.params, result, request.operation)
    if outcome.maybe_billed:
        reserved = Cost(admission.hold.images, 0, 0, admission.hold.credits)
        return Charge(reserved, reserved)
    return Charge(NO_COST, NO_COST)


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
        max_jobs_in_flight: int = 20,
    ) -> None:
        """`keys` wraps the keys table; without `usage_table` nothing is metered (quota still applies)."""
        self._keys = keys
        self._clock = clock
        self._log_prompts = log_prompts
        self._prices = prices or PriceTable.load()
        self._ledger = KeyLedger(keys.table, clock, max_jobs_in_flight=max_jobs_in_flight)
        self._client = keys.table.meta.client
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
            max_jobs_in_flight=settings.max_jobs_in_flight,
        )

    @property
    def prices(self) -> PriceTable:
        return self._prices

    # ----- who is calling ----------------------------------------------------------------------------

    @staticmethod
    def credential(authorization: str | None) -> Credential:
        """The bearer key's hash: 401 for a missing or malformed header; no AWS call."""
        raw = bearer_token(authorization)
        if len(raw) > MAX_KEY_LENGTH:
            raise InvalidApiKey(f"Incorrect API key provided: {mask_key(raw)}.")
        return Credential(hash_key(raw), mask_key(raw))

    def authenticate(self, authorization: str | None) -> Caller:
        """One consistent GetItem (requests without an admission: job status, refused bodies)."""
        credential = self.credential(authorization)
        table = self._keys.table
        item = table.get_item(Key={"key_hash": credential.key_hash}, ConsistentRead=True).get("Item")
        if item and not hmac.compare_digest(str(item.get("key_hash", "")), credential.key_hash):
            item = None
        check_usable(item or {}, credential.display, self._clock())
        return caller_from_item(item or {})

    # ----- admission ---------------------------------------------------------------------------------

    def admit(
        self, who: Credential | Caller, request: ImageRequest, request_id: str, *, job: bool = False
    ) -> Admission:
        """Authenticate, allow-list, rate-limit and reserve (one write; see the module docstring)."""
        images = request.n
        credits = self._prices.estimate_cents(request.model, request.params, images, request.operation)
        try:
            admitted = self._ledger.admit(who.key_hash, who.display, request_id, images, credits, job=job)
        except ApiError as exc:
            _refused(who.display, request_id, exc.code)
            raise
        caller = caller_from_item(admitted.item)
        admission = Admission(caller, request, request_id, admitted.hold, admitted.stale)
        if not model_allowed(caller, request.model):
            self._ledger.undo(caller.key_hash, admitted)
            _refused(caller.display, request_id, "model_not_allowed")
            raise ModelNotAllowed(
                f"This API key is not allowed to use the model '{request.model}'.", param="model"
            )
        if any(hold.expires <= self._clock() for hold in holds_of(admitted.item)):
            self._release_quietly(admitted.item)
        if job and len(admitted.stale) >= STALE_WINDOWS_SWEEP:
            self._ledger.remove_windows(caller.key_hash, admitted.stale)
        return admission

    def resume(self, caller: Caller, request: ImageRequest, hold: Hold) -> Admission:
        """The admission of a job admitted at submission (its hold is on the key item): no write."""
        return Admission(caller, request, hold.id, hold)

    def _release_quietly(self, item: dict[str, Any]) -> None:
        try:
            self._ledger.release_expired(item, self._clock())
        except Exception:
            logger.exception("could not release expired holds")

    # ----- settlement --------------------------------------------------------------------------------

    def settle(
        self,
        admission: Admission,
        outcome: Outcome,
        *,
        also: Sequence[dict[str, Any]] = (),
        strict: bool = False,
    ) -> bool:
        """Charge or refund by the ledger rule, meter, remove the hold: once per id. True when this call
        settled it, False when it was settled before. Never raises unless `strict` (the jobs worker: the
        `also` items, its job record, must be written with it or the job tried again)."""
        if admission.settled:
            logger.warning("admission settled twice; ignored", extra=_log_keys(admission))
            return False
        try:
            done = self._settle(admission, outcome, list(also))
            if not done and also and self._transact(list(also)):
                raise RuntimeError("the writes settled with the request were refused")
        except Exception:
            if strict:
                raise
            logger.exception("could not settle", extra=_log_keys(admission))
            return False
        admission.settled = True
        return done

    def _settle(self, admission: Admission, outcome: Outcome, also: list[dict[str, Any]]) -> bool:
        charge = ledger_rule(self._prices, admission, outcome)
        hold, key_hash = admission.hold, admission.caller.key_hash
        adjust = Adjustment(charge.charged.images - hold.images, charge.charged.cents - hold.credits)
        usage = self._usage_items(admission, outcome, charge)
        first = [self._ledger.settle_item(key_hash, hold, adjust, admission.stale), *usage, *also]
        reasons = self._transact(first)
        if not reasons:
            return True
        if reasons[0] != _CONDITION_FAILED:  # the hold is there: something else refused the write
            raise RuntimeError(f"settlement refused: {reasons}")
        if not usage or reasons[2] == _CONDITION_FAILED:
            # The hold is gone and the request's log record is there: settled before. (Without a usage
            # table nothing tells a released hold from a settled one: assume settled.)
            return False
        # The hold expired and was released before this settlement: charge without it, once (the log).
        full = Adjustment(charge.charged.images, charge.charged.cents)
        reasons = self._transact([self._ledger.charge_item(key_hash, full), *usage, *also])
        if not reasons:
            logger.warning("settled after the hold expired", extra=_log_keys(admission))
            return True
        if reasons[2] == _CONDITION_FAILED:
            return False
        raise RuntimeError(f"settlement refused: {reasons}")

    def _transact(self, items: list[dict[str, Any]]) -> list[str]:
        """[] when written; else each item's cancellation reason code ("None" for the ones that passed)."""
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or []
            codes = [str(reason.get("Code", "None")) for reason in reasons]
            return codes if codes else [_CONDITION_FAILED] * len(items)
        return []

    def _usage_items(self, admission: Admission, outcome: Outcome, charge: Charge) -> list[dict[str, Any]]:
        if self._usage is None:
            return []
        event = self._event(admission, outcome, charge)
        return [self._usage.counters_item(event), self._usage.log_put(event)]

    def _event(self, admission: Admission, outcome: Outcome, charge: Charge) -> UsageEvent:
        request, result, cost = admission.request, outcome.result, charge.charged
        meta = result.meta if result is not None else {}
        size = meta.get("size") or request.params.get("size")
        quality = meta.get("quality") or request.params.get("quality")
        prompt = request.params.get("prompt") if self._log_prompts else None
        ok = result is not None and outcome.status < 400
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
            error_code=None if ok else outcome.error_code,
            prompt=str(prompt) if prompt else None,
            ok=ok,
            upstream_model=charge.upstream_model,
            upstream_cost_cents=charge.upstream.cents,
        )


def model_allowed(caller: Caller, model: str) -> bool:
    """`allowed_models` holds names or fnmatch patterns (`gpt-image-*`); absent allows every model."""
    if caller.allowed_models is None:
        return True
    return any(fnmatchcase(model, pattern) for pattern in caller.allowed_models)


def _refused(display: str, request_id: str, code: str | None) -> None:
    logger.info("request refused", extra={"key": display, "request_id": request_id, "code": code})


def _log_keys(admission: Admission) -> dict[str, Any]:
    return {
        "key": admission.caller.display,
        "key_id": admission.caller.key_id,
        "request_id": admission.request_id,
    }
