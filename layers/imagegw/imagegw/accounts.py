"""What the pipeline asks of the accounts side: who is calling, may they, and what did they use.

The service calls `authenticate`, then `admit` before the upstream call and `settle` exactly once after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .domain import Caller, ImageRequest, UpstreamResult
from .errors import ModelNotAllowed
from .keys import KeyStore


@dataclass
class Admission:
    caller: Caller
    request: ImageRequest
    request_id: str
    reserved_images: int = 0


@dataclass
class Outcome:
    status: int
    latency_ms: int
    result: UpstreamResult | None = None  # None when the request failed: reserved quota is refunded
    error_code: str | None = None


class Accounts:
    def __init__(self, keys: KeyStore, **_: Any) -> None:
        self._keys = keys

    def authenticate(self, authorization: str | None) -> Caller:
        return self._keys.authenticate(authorization)

    def admit(self, caller: Caller, request: ImageRequest, request_id: str) -> Admission:
        if caller.allowed_models is not None and request.model not in caller.allowed_models:
            raise ModelNotAllowed(
                f"This API key is not allowed to use the model '{request.model}'.", param="model"
            )
        return Admission(caller, request, request_id)

    def settle(self, admission: Admission, outcome: Outcome) -> None:
        return None
