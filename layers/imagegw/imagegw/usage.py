"""Usage metering in the usage table (hash `pk`, range `sk`, TTL `expires_at`).

    pk `key#<key_id>`            sk `day#2026-11-28`                per key and day, atomic ADD counters:
                                                                    requests, succeeded, failed, images,
                                                                    input_tokens, output_tokens, cost_cents
    pk `key#<key_id>`            sk `model#2026-11-28#<model>`      the same per model
    pk `log#<key_id>#2026-11-28` sk `<iso time>#<request_id>`       one record per request (TTL): request_id,
                                                                    model, route, status, latency_ms, images,
                                                                    tokens, cost_cents, size, quality...;
                                                                    the prompt only when log_prompts is on
    pk `rate#<key_id>`           sk `2026-11-28T03:25:00Z`          rate-limit window counter (quota.py, TTL)

Costs are estimates in USD cents from the price table (pricing.py, prices.json).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key

DAY_SECONDS = 86_400
COUNTERS = ("requests", "succeeded", "failed", "images", "input_tokens", "output_tokens", "cost_cents")


@dataclass
class UsageEvent:
    key_id: str
    request_id: str
    model: str
    route: str  # the API operation: generations, edits, variations
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

    @property
    def day(self) -> str:
        return day_of(self.at)


def day_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class UsageRecorder:
    def __init__(self, table: Any, *, log_retention_days: int = 30, usage_retention_days: int = 400) -> None:
        self._table = table
        self._log_ttl = log_retention_days * DAY_SECONDS
        self._usage_ttl = usage_retention_days * DAY_SECONDS

    def record(self, event: UsageEvent) -> None:
        """Day and per-model counters (atomic ADD) plus one usage-log record."""
        counts = {
            "requests": 1,
            "succeeded": 1 if event.ok else 0,
            "failed": 0 if event.ok else 1,
            "images": event.images,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cost_cents": event.cost_cents,
        }
        expires = int(event.at) + self._usage_ttl
        pk = f"key#{event.key_id}"
        fixed: dict[str, Any] = {"key_id": event.key_id, "day": event.day, "expires_at": expires}
        self._add(pk, f"day#{event.day}", counts, fixed)
        self._add(pk, f"model#{event.day}#{event.model}", counts, {**fixed, "model": event.model})
        self._table.put_item(Item=self.log_item(event))

    def log_item(self, event: UsageEvent) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": f"log#{event.key_id}#{event.day}",
            "sk": f"{iso_time(event.at)}#{event.request_id}",
            "request_id": event.request_id,
            "key_id": event.key_id,
            "time": iso_time(event.at),
            "model": event.model,
            "route": event.route,
            "status": event.status,
            "latency_ms": event.latency_ms,
            "n": event.n,
            "images": event.images,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cost_cents": event.cost_cents,
            "stream": event.stream,
            "expires_at": int(event.at) + self._log_ttl,
        }
        optional = {
            "size": event.size,
            "quality": event.quality,
            "upstream_route": event.upstream_route,
            "error_code": event.error_code,
            "prompt": event.prompt,
        }
        item.update({k: v for k, v in optional.items() if v})
        return item

    def _add(self, pk: str, sk: str, counts: dict[str, Any], fixed: dict[str, Any]) -> None:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        adds, sets = [], []
        for i, (name, value) in enumerate(counts.items()):
            names[f"#a{i}"] = name
            values[f":a{i}"] = value
            adds.append(f"#a{i} :a{i}")
        for i, (name, value) in enumerate(fixed.items()):
            names[f"#s{i}"] = name
            values[f":s{i}"] = value
            sets.append(f"#s{i} = :s{i}")
        self._table.update_item(
            Key={"pk": pk, "sk": sk},
            UpdateExpression=f"ADD {', '.join(adds)} SET {', '.join(sets)}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


class UsageReader:
    def __init__(self, table: Any) -> None:
        self._table = table

    def days(self, key_id: str, first: date, last: date) -> list[dict[str, Any]]:
        """Day totals from `first` to `last` inclusive (days without requests are absent)."""
        return list(self._query(f"key#{key_id}", f"day#{first.isoformat()}", f"day#{last.isoformat()}"))

    def models(self, key_id: str, first: date, last: date) -> list[dict[str, Any]]:
        """Per model and day, from `first` to `last` inclusive."""
        return list(
            self._query(f"key#{key_id}", f"model#{first.isoformat()}#", f"model#{last.isoformat()}#~")
        )

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


def day_range(today: date, days: int) -> tuple[date, date]:
    return today - timedelta(days=max(1, days) - 1), today


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {name: 0 for name in COUNTERS}
    for row in rows:
        for name in COUNTERS:
            out[name] += row.get(name, 0)
    return out
