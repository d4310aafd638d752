"""Lambda's side, locally: the context object and warm "containers" (separately imported handler modules)
of one function, so that each concurrent invocation gets its own, as on Lambda."""

from __future__ import annotations

import importlib.util
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegw_dev.local_stack.resources import REGION
from imagegw_dev.local_stack.template_values import template_number


@dataclass
class LambdaContext:
    """What Powertools and our handlers read from the Lambda context object."""

    function_name: str
    timeout_s: float
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


class FunctionPool:
    """Warm containers of one function: each concurrent invocation gets its own imported handler module."""

    def __init__(self, name: str, code_dir: Path, handler: str, timeout_s: float, memory_mb: int) -> None:
        self.name = name
        self._code_dir = code_dir
        self._module_name, _, self._attr = handler.rpartition(".")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._idle: list[Callable[..., Any]] = []
        self._lock = threading.Lock()
        self._loaded = 0

    def _load(self) -> Callable[..., Any]:
        with self._lock:
            self._loaded += 1
            index = self._loaded
        path = self._code_dir / (self._module_name.replace(".", "/") + ".py")
        spec = importlib.util.spec_from_file_location(f"imagegw_local_{self.name}_{index}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler: Callable[..., Any] = getattr(module, self._attr)
        return handler

    def warm(self) -> None:
        handler = self._load()
        with self._lock:
            self._idle.append(handler)

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            handler = self._idle.pop() if self._idle else None
        if handler is None:
            handler = self._load()  # a cold start
        try:
            context = LambdaContext(self.name, self.timeout_s, self.memory_mb)
            return handler(event, context)
        finally:
            with self._lock:
                self._idle.append(handler)


def function_pool(name: str, props: dict[str, Any], template: dict[str, Any], root: Path) -> FunctionPool:
    """The pool of a template function, with its timeout and memory size (Globals filled in)."""
    globals_fn = (template.get("Globals") or {}).get("Function") or {}
    timeout = template_number(props.get("Timeout", globals_fn.get("Timeout")), template, 30)
    memory = template_number(props.get("MemorySize", globals_fn.get("MemorySize")), template, 1024)
    return FunctionPool(name, root / str(props["CodeUri"]), props["Handler"], timeout, int(memory))
