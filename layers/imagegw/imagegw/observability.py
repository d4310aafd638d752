"""Powertools Logger, Metrics and Tracer, one of each per container.

Tracing follows Powertools' own rule: on in Lambda, off outside it (the local stack, tests, tools), under SAM
local, or with POWERTOOLS_TRACE_DISABLED. When it is off, the X-Ray SDK is not loaded at all: a disabled
Powertools Tracer still imports it (and off Lambda its sampler builds two botocore clients), so a stand-in
whose decorators return the function unchanged takes its place. When it is on, the modules the gateway uses
are patched by name, as patch_all would do for them: botocore (DynamoDB, S3, SQS, Secrets Manager, SSM),
requests (upstream calls) and httplib (image URL fetches); patch_all would also load sqlite3 and look for a
dozen database and HTTP libraries the layer does not ship.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

F = TypeVar("F", bound=Callable[..., Any])

TRACED_MODULES = ("botocore", "requests", "httplib")
_TRUE = frozenset({"1", "y", "yes", "t", "true", "on"})


def tracing_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Powertools' rule (Tracer._is_tracer_disabled), without loading the X-Ray SDK to apply it."""
    if env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUE:
        return False
    in_lambda = bool(env.get("LAMBDA_TASK_ROOT"))
    return in_lambda and not env.get("AWS_SAM_LOCAL") and not env.get("AWS_CHALICE_CLI_MODE")


class NoTracer:
    """Takes the Tracer's place where tracing is off: its decorators return the function unchanged."""

    def capture_lambda_handler(self, handler: F | None = None, **options: Any) -> Any:
        """Both forms the Tracer takes: `@capture_lambda_handler` and `@capture_lambda_handler(...)`."""
        return handler if handler is not None else _unchanged

    def capture_method(self, method: F | None = None, **options: Any) -> Any:
        return method if method is not None else _unchanged


def _unchanged(function: F) -> F:
    return function


def make_tracer(env: Mapping[str, str] = os.environ) -> Tracer | NoTracer:
    if not tracing_enabled(env):
        return NoTracer()
    from aws_lambda_powertools import Tracer

    return Tracer(service="imagegw", patch_modules=TRACED_MODULES)


logger = Logger(service="imagegw")
metrics = Metrics(namespace="imagegw", service="imagegw")
tracer = make_tracer()
