"""Usage metering in the usage table (hash `pk`, range `sk`, TTL `expires_at`).

    pk `key#<key_id>`            sk `day#2026-11-28`                per key and day, atomic ADD counters:
                                                                    requests, succeeded, failed, images,
                                                                    input_tokens, output_tokens, cost_cents
                                                                    (charged to the key), upstream_cost_cents
                                                                    (what the upstream cost the operator);
                                                                    and per model on the same item, named
                                                                    `model#<model>#<counter>` (`model#dall-e-3
                                                                    #images`; counters still 0 are absent)
    pk `key#<key_id>`            sk `model#2026-11-28#<model>`      legacy: per-model items written before the
                                                                    per-model counters moved onto the day
                                                                    item; still read, no longer written
    pk `log#<key_id>#2026-11-28` sk `<iso time>#<request_id>`       one record per request (TTL): request_id,
                                                                    model, operation, status, latency_ms,
                                                                    images, tokens, cost_cents, size...,
                                                                    upstream_model and upstream_cost_cents;
                                                                    the prompt only when log_prompts is on
    pk `rate#<key_id>`           sk `2026-11-28T03:25:00Z`          legacy: rate-limit windows, before they
                                                                    moved onto the key item (quota.py); TTL

Costs are estimates in USD cents from the price table (pricing.py, prices.json).

A request's usage is two items of one transaction (`accounts.Accounts.settle`, with the key item's
settlement): an Update of the day (and per-model) counters and a Put of the log record, the latter on the
condition that no record exists for the request yet (the log record is also what makes a settlement
without a hold happen once). They are built for the table's low-level client (`table.meta.client`: from a
resource, it takes plain Python values).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key

DAY_SECONDS = 86_400
COUNTERS = (
    "requests",
    "succeeded",
    "failed",
    "images",
    "input_tokens",
    "output_tokens",
    "cost_cents",
    "upstream_cost_cents",
)
MODEL_PREFIX = "model#"  # per-model counters on the day item: `model#<model>#<counter>`


@dataclass
class UsageEvent:
    key_id: str
    request_id: str
    model: str
    operation: str  # generations, edits, variations
    status: int
    latency_ms: int
    at: float  # epoch seconds when the request was admitted
    images: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_cents: Decimal = Decimal(0)
    n: int = 1
    size: str | None = None
    quality: str | None = None
    stream: bool = False
    upstream_route: str | None = None
    error_code: str | None = None
    prompt: str | None = None  # only when log_prompts is on
    ok: bool = True  # the request succeeded (images delivered)
    upstream_model: str | None = None  # the model the upstream route called (may differ: translation)
    upstream_cost_cents: Decimal = Decimal(0)  # its reported usage at that model's prices

    @property
    def day(self) -> str:
        return day_of(self.at)


def day_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class UsageRecorder:
    def __init__(self, table: Any, *, log_retention_days: int = 30, usage_retention_days: int = 400) -> None:
        self._client = table.meta.client  # thread-safe, unlike the resource (see the module docstring)
        self._name = table.name
        self._log_ttl = log_retention_days * DAY_SECONDS
        self._usage_ttl = usage_retention_days * DAY_SECONDS

    def counters_item(self, event: UsageEvent) -> dict[str, Any]:
        """The day's counters and the model's counters on the day item: one transaction Update (ADD)."""
        counts = {
            "requests": 1,
            "succeeded": 1 if event.ok else 0,
            "failed": 0 if event.ok else 1,
            "images": event.images,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cost_cents": event.cost_cents,
            "upstream_cost_cents": event.upstream_cost_cents,
        }
        # Only the model counters that move: a dall-e model never creates its token counters.
        per_model = {f"{MODEL_PREFIX}{event.model}#{name}": value for name, value in counts.items() if value}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        adds = []
        for i, (name, value) in enumerate({**counts, **per_model}.items()):
            names[f"#a{i}"] = name
            values[f":a{i}"] = value
            adds.append(f"#a{i} :a{i}")
        names.update({"#key_id": "key_id", "#day": "day", "#expires_at": "expires_at"})
        values.update(
            {":key_id": event.key_id, ":day": event.day, ":expires_at": int(event.at) + self._usage_ttl}
        )
        return {
            "Update": {
                "TableName": self._name,
                "Key": {"pk": f"key#{event.key_id}", "sk": f"day#{event.day}"},
                "UpdateExpression": (
                    f"ADD {', '.join(adds)} SET #key_id = :key_id, #day = :day, #expires_at = :expires_at"
                ),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def log_put(self, event: UsageEvent) -> dict[str, Any]:
        """The request's one usage-log record: a transaction Put, only if the request has none yet."""
        return {
            "Put": {
                "TableName": self._name,
                "Item": self.log_item(event),
                "ConditionExpression": "attribute_not_exists(sk)",
            }
        }

    def log_item(self, event: UsageEvent) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": f"log#{event.key_id}#{event.day}",
            "sk": f"{iso_time(event.at)}#{event.request_id}",
            "request_id": event.request_id,
            "key_id": event.key_id,
            "time": iso_time(event.at),
            "model": event.model,
            "operation": event.operation,
            "status": event.status,
            "latency_ms": event.latency_ms,
            "n": event.n,
            "images": event.images,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cost_cents": event.cost_cents,
            "upstream_cost_cents": event.upstream_cost_cents,
            "stream": event.stream,
            "expires_at": int(event.at) + self._log_ttl,
        }
        optional = {
            "size": event.size,
            "quality": event.quality,
            "upstream_route": event.upstream_route,
            "upstream_model": event.upstream_model,
            "error_code": event.error_code,
            "prompt": event.prompt,
        }
        item.update({k: v for k, v in optional.items() if v})
        return item


class UsageReader:
    def __init__(self, table: Any) -> None:
        self._table = table

    def days(self, key_id: str, first: date, last: date) -> list[dict[str, Any]]:
        """Day totals from `first` to `last` inclusive (days without requests are absent)."""
        return list(self._query(f"key#{key_id}", f"day#{first.isoformat()}", f"day#{last.isoformat()}"))

    def models(self, key_id: str, first: date, last: date) -> list[dict[str, Any]]:
        """Per model and day, from `first` to `last` inclusive: rows with `model`, `day` and the counters.

        From the day items' `model#<model>#<counter>` attributes, plus the legacy per-model items of days
        metered before those (a day can have both: add the rows up per model).
        """
        rows = [row for day in self.days(key_id, first, last) for row in model_rows(day)]
        legacy = self._query(f"key#{key_id}", f"model#{first.isoformat()}#", f"model#{last.isoformat()}#~")
        return rows + list(legacy)

    def log(self, key_id: str, day: date) -> list[dict[str, Any]]:
        return list(self._query(f"log#{key_id}#{day.isoformat()}", "", "~"))

    def _query(self, pk: str, low: str, high: str) -> Iterator[dict[str, Any]]:
        condition: Any = Key("pk").eq(pk)
        if low:
            condition = condition & Key("sk").between(low, high)
        kwargs: dict[str, Any] = {"KeyConditionExpression": condition}
        while True:
            page = self._table.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def model_rows(day_item: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-model counters of one day item, one row per model (`model`, `day`, counters)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, value in day_item.items():
        if not name.startswith(MODEL_PREFIX):
            continue
        model, _, counter = name[len(MODEL_PREFIX) :].rpartition("#")
        if model and counter in COUNTERS:
            rows.setdefault(model, {"model": model, "day": day_item.get("day")})[counter] = value
    return [rows[model] for model in sorted(rows)]


def day_range(today: date, days: int) -> tuple[date, date]:
    return today - timedelta(days=max(1, days) - 1), today


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {name: 0 for name in COUNTERS}
    for row in rows:
        for name in COUNTERS:
            out[name] += row.get(name, 0)
    return out
