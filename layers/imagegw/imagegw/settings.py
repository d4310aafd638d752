"""Settings, read from the environment once per container and passed down as an argument.

Every field maps one to one to an environment variable that `template.yaml` sets on the functions
(a test checks the two agree). Nothing else in the package reads `os.environ`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields


class SettingsError(ValueError):
    """A required setting is missing or malformed; raised at cold start, never per request."""


@dataclass(frozen=True)
class Settings:
    bucket: str
    keys_table: str
    usage_table: str
    jobs_table: str
    idempotency_table: str
    jobs_queue_url: str
    # Where the routes come from: "" for the shipped default file, "ssm:/name" for an SSM parameter,
    # or a file path.
    routes_source: str = ""
    # Secrets Manager secret (ARN or name) holding upstream credentials as JSON
    # ({"<credential name>": {"api_key": "..."}}); "" sends no credentials upstream.
    upstream_secret_id: str = ""
    url_ttl_seconds: int = 3600
    # Work on a synchronous request stops this long before API Gateway's integration timeout.
    sync_deadline_seconds: float = 28.0
    max_attempts: int = 3
    attempt_timeout_seconds: float = 120.0
    cooldown_seconds: float = 30.0
    log_prompts: bool = False
    # Async jobs: the worker marks a job failed on the attempt whose SQS ApproximateReceiveCount reaches
    # this (the queue's maxReceiveCount: the message then moves to the dead-letter queue); job records
    # (and the idempotency records of jobs) expire after jobs_ttl_seconds.
    jobs_max_receive_count: int = 3
    jobs_ttl_seconds: int = 7 * 24 * 3600
    # What one request's images may total in memory (fetched image_urls, data URLs, files), in MB: a quarter
    # of the API function's memory (template parameter MaxRequestInputMB; docs in README, Security).
    max_request_input_mb: int = 256
    # Async jobs one key may have queued or running at once, unless its key item says otherwise.
    max_jobs_in_flight: int = 20

    @property
    def max_request_input_bytes(self) -> int:
        return self.max_request_input_mb * 1024 * 1024

    # Browser origins allowed to call the API (CORS), comma-separated `https://host[:port]`; empty: none.
    cors_allow_origins: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        missing = []
        for f in fields(cls):
            name = env_name(f.name)
            raw = env.get(name)
            if raw is None or raw == "":
                if f.default is MISSING:
                    missing.append(name)
                continue
            values[f.name] = _convert(name, raw, type(f.default) if f.default is not MISSING else str)
        if missing:
            raise SettingsError(f"missing required settings: {', '.join(missing)}")
        settings = cls(**values)  # type: ignore[arg-type]
        settings._check()
        return settings

    @property
    def cors_origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/").lower() for o in self.cors_allow_origins.split(",") if o.strip()
        )

    def _check(self) -> None:
        for origin in self.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    f"IMAGEGW_CORS_ALLOW_ORIGINS: {origin!r} is not an origin like https://app.example.com "
                    "(scheme and host, optional port; no path, no wildcard)"
                )
        if self.url_ttl_seconds <= 0 or self.url_ttl_seconds > 7 * 24 * 3600:
            raise SettingsError("IMAGEGW_URL_TTL_SECONDS must be between 1 and 604800")
        if self.max_attempts < 1:
            raise SettingsError("IMAGEGW_MAX_ATTEMPTS must be at least 1")
        if self.sync_deadline_seconds <= 0 or self.attempt_timeout_seconds <= 0:
            raise SettingsError("deadlines and timeouts must be positive")
        if not 8 <= self.max_request_input_mb <= 10240:
            raise SettingsError("IMAGEGW_MAX_REQUEST_INPUT_MB must be between 8 and 10240")
        if self.jobs_max_receive_count < 1 or self.jobs_ttl_seconds < 3600:
            raise SettingsError(
                "IMAGEGW_JOBS_MAX_RECEIVE_COUNT must be at least 1 and IMAGEGW_JOBS_TTL_SECONDS at least 3600"
            )
        if self.max_jobs_in_flight < 1:
            raise SettingsError("IMAGEGW_MAX_JOBS_IN_FLIGHT must be at least 1")


_ORIGIN = re.compile(r"https?://[a-z0-9.-]+(:\d{1,5})?")


def env_name(field_name: str) -> str:
    return "IMAGEGW_" + field_name.upper()


def required_env_names() -> list[str]:
    return [env_name(f.name) for f in fields(Settings) if f.default is MISSING]


def all_env_names() -> list[str]:
    return [env_name(f.name) for f in fields(Settings)]


def _convert(name: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            if raw.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"true", "1", "yes"}
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} is not a valid {kind.__name__}: {raw!r}") from exc
    return raw
