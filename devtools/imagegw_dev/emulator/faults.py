"""Faults: what the emulator does wrong, taken from a prompt directive, the queue or the fault mode."""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from imagegw_dev.emulator.errors import ApiError

_DIRECTIVE_RE = re.compile(r"\s*\[\[emulator:([^\]]*)\]\]\s*", re.IGNORECASE)


@dataclass
class Fault:
    """What the emulator does wrong for one image request (or every request, as the fault mode).

    `delay` is applied first; then `drop` closes the socket without any response; else a `status`
    (other than 200) answers an OpenAI-format error with `retry_after` as the `retry-after` header and
    `message` as the error message; else the normal answer is sent, spoiled by `malformed_json`
    (a 200 body that is not JSON) or `truncated_b64` (b64_json cut so it is neither valid base64 nor
    a whole image; for `url` answers the served file is cut in half).
    """

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    malformed_json: bool = False
    truncated_b64: bool = False
    message: str | None = None

    @classmethod
    def coerce(cls, value: Fault | Mapping[str, Any]) -> Fault:
        """A Fault from a Fault or a dict with the same field names (ValueError on anything else)."""
        if isinstance(value, Fault):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"a fault must be a Fault or an object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known: {sorted(known)}")
        status = value.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
            raise ValueError("fault 'status' must be an integer or null")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("fault 'status' must be between 100 and 599")
        retry_after = value.get("retry_after")
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, str | int | float):
                raise ValueError("fault 'retry_after' must be a string or a number")
            retry_after = str(retry_after)
        delay = value.get("delay", 0.0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError("fault 'delay' must be a number of seconds >= 0")
        flags = {}
        for name in ("drop", "malformed_json", "truncated_b64"):
            flag = value.get(name, False)
            if not isinstance(flag, bool):
                raise ValueError(f"fault '{name}' must be a boolean")
            flags[name] = flag
        message = value.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("fault 'message' must be a string or null")
        return cls(status=status, retry_after=retry_after, delay=float(delay), message=message, **flags)


class FaultPlan:
    """The queued faults (each image request consumes one, in order) and the fault mode (every request once
    the queue is empty, until cleared)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._mode: Fault | None = None

    def add(self, *faults: Fault | Mapping[str, Any]) -> None:
        coerced = [Fault.coerce(f) for f in faults]
        with self._lock:
            self._queue.extend(coerced)

    def set_mode(self, fault: Fault | Mapping[str, Any] | None) -> None:
        coerced = Fault.coerce(fault) if fault is not None else None
        with self._lock:
            self._mode = coerced

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._mode = None

    def next(self, directive: Fault | None) -> Fault | None:
        """The fault for one image request: the prompt's directive, else the next queued, else the mode."""
        if directive is not None:
            return directive
        with self._lock:
            return self._queue.popleft() if self._queue else self._mode

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": [asdict(f) for f in self._queue],
                "mode": asdict(self._mode) if self._mode is not None else None,
            }


def parse_directives(prompt: str) -> tuple[str, Fault | None]:
    """(the prompt without its `[[emulator:...]]` directives, the fault they ask for, or None).

    Tokens, comma-separated or in several directives: `500` (any 3-digit status; `429` also sets
    retry-after: 1), `delay=2.5`, `retry-after=3`, `drop`, `malformed`, `truncated`.
    """
    groups = [m.group(1) for m in _DIRECTIVE_RE.finditer(prompt)]
    if not groups:
        return prompt, None
    fault = Fault()
    for group in groups:
        for raw in group.split(","):
            word = raw.strip().lower()
            value = word.partition("=")[2].strip()
            try:
                if re.fullmatch(r"\d{3}", word):
                    fault.status = int(word)
                    if word == "429" and fault.retry_after is None:
                        fault.retry_after = "1"
                elif word.startswith("delay="):
                    fault.delay = float(value)
                    if not math.isfinite(fault.delay) or fault.delay < 0:
                        raise ValueError(word)
                elif word.startswith(("retry-after=", "retry_after=")) and value:
                    fault.retry_after = value
                elif word == "drop":
                    fault.drop = True
                elif word in ("malformed", "malformed_json"):
                    fault.malformed_json = True
                elif word in ("truncated", "truncated_b64"):
                    fault.truncated_b64 = True
                else:
                    raise ValueError(word)
            except ValueError:
                raise ApiError(
                    400,
                    f"Unknown emulator directive '[[emulator:{group}]]' (token {raw.strip()!r}).",
                    param="prompt",
                    code="invalid_value",
                ) from None
    return _DIRECTIVE_RE.sub(" ", prompt).strip(), fault


def truncate_b64(b64: str) -> str:
    # 4k+1 characters can never be valid base64, strict or lenient, and half a PNG is not an image.
    return b64[: (len(b64) // 2) // 4 * 4 + 1]
