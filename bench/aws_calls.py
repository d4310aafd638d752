"""Benchmark 5: DynamoDB and S3 (and any other AWS) calls per request, by delivery mode, over the local stack.

Counted on the client side, by wrapping botocore's `BaseClient._make_api_call` for the whole process, so the
count does not depend on how the wiring builds its clients. Each call is attributed to the function whose
invocation made it: the local stack runs every function through `FunctionPool.invoke`, which is wrapped to
label its thread. Calls from other threads (a pool the gateway's code starts, for example) are counted as
"other threads". Not counted: the local SQS event source's own receive/delete calls (Lambda's event source
mapping makes those in AWS, not the gateway's code) and the benchmark's own.

Modes, each a gpt-image-1.5 1024x1024 generation through the local API after one uncounted warm-up:
b64 (the default answer), url (`response_format: url`), stream (`stream: true`), async
(`Prefer: respond-async`: the submission, then the jobs worker until the job has ended; the status reads
the benchmark makes while it waits are reported per read).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from http_client import Body, get, json_body, post
from local import BenchStack

PROMPT = "A cute little sea otter floating on its back, holding a pebble"
OTHER = "other threads"
JOB_TIMEOUT_S = 30.0
QUIET_S = 0.3  # no new call for this long after the job ended: the worker has finished


class CallCounter:
    """Every AWS API call made in this process while counting, as (function, "service.Operation")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[tuple[str, str]] = []
        self._label = threading.local()
        self._undo: list[tuple[Any, str, Any]] = []

    # -- installation --

    def install(self) -> CallCounter:
        import botocore.client

        from imagegw_dev.local_stack import FunctionPool, SqsEventSource

        counter = self
        make_api_call = botocore.client.BaseClient._make_api_call
        invoke = FunctionPool.invoke
        poll_once = SqsEventSource.poll_once

        def counted_call(client: Any, operation: str, params: Any) -> Any:
            function = getattr(counter._label, "function", None)
            if function != "":  # "" = the event source or the benchmark itself
                name = f"{client.meta.service_model.service_name}.{operation}"
                with counter._lock:
                    counter._calls.append((function or OTHER, name))
            return make_api_call(client, operation, params)

        def labelled_invoke(pool: Any, event: Any) -> Any:
            with counter.labelled(pool.name):
                return invoke(pool, event)

        def unlabelled_poll(source: Any, *args: Any, **kwargs: Any) -> Any:
            with counter.labelled(""):
                return poll_once(source, *args, **kwargs)

        for owner, name, replacement in (
            (botocore.client.BaseClient, "_make_api_call", counted_call),
            (FunctionPool, "invoke", labelled_invoke),
            (SqsEventSource, "poll_once", unlabelled_poll),
        ):
            self._undo.append((owner, name, getattr(owner, name)))
            setattr(owner, name, replacement)
        return self

    def uninstall(self) -> None:
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)

    @contextlib.contextmanager
    def labelled(self, function: str) -> Iterator[None]:
        previous = getattr(self._label, "function", None)
        self._label.function = function
        try:
            yield
        finally:
            self._label.function = previous

    # -- reading --

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    def count(self) -> int:
        with self._lock:
            return len(self._calls)


def _body(mode: str) -> Body:
    params: dict[str, Any] = {"model": "gpt-image-1.5", "prompt": PROMPT, "size": "1024x1024"}
    if mode == "url":
        params["response_format"] = "url"
    if mode == "stream":
        params["stream"] = True
    return json_body(params)


def _send(stack: BenchStack, mode: str, counter: CallCounter) -> tuple[int, int]:
    """One request of `mode`; for async, waits for the job to end. Returns (status, status reads)."""
    headers = {"Prefer": "respond-async"} if mode == "async" else None
    answer = post(stack.gateway("/images/generations"), _body(mode), headers=headers)
    if answer.status not in (200, 202):
        raise RuntimeError(f"{mode}: HTTP {answer.status}: {answer.payload[:300]!r}")
    if mode != "async":
        return answer.status, 0
    job_id = answer.json()["id"]
    deadline, reads = time.monotonic() + JOB_TIMEOUT_S, 0
    while time.monotonic() < deadline:
        time.sleep(0.1)
        reads += 1
        job = get(stack.gateway(f"/images/jobs/{job_id}")).json()
        if job.get("status") in ("succeeded", "failed"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"async job failed: {job.get('error')}")
            break
    else:
        raise RuntimeError(f"async job {job_id} did not end within {JOB_TIMEOUT_S} s")
    seen = counter.count()
    while True:  # let the worker finish what follows the status write (settle, delete, ...)
        time.sleep(QUIET_S)
        now = counter.count()
        if now == seen:
            return answer.status, reads
        seen = now


MODES = ("b64", "url", "stream", "async")


def run(stack: BenchStack, *, requests: int, modes: tuple[str, ...] = MODES) -> Any:
    counter = CallCounter().install()
    try:
        results: dict[str, Any] = {"requests": requests, "modes": {}}
        for mode in modes:
            _send(stack, mode, counter)  # warm-up: containers and clients built, not counted
            time.sleep(QUIET_S)
            counter.take()
            reads = 0
            for _ in range(requests):
                reads += _send(stack, mode, counter)[1]
            results["modes"][mode] = _per_request(counter.take(), requests, reads)
    finally:
        counter.uninstall()
    return results


def _per_request(calls: list[tuple[str, str]], requests: int, status_reads: int) -> dict[str, Any]:
    status_fn = "JobStatusFunction"
    reads = [(f, op) for f, op in calls if f == status_fn]
    rest = [(f, op) for f, op in calls if f != status_fn]
    by_op = Counter(op for _, op in rest)
    by_function = Counter(f for f, _ in rest)
    per = {op: n / requests for op, n in sorted(by_op.items())}
    return {
        "calls": len(rest) / requests,
        "dynamodb": sum(n for op, n in per.items() if op.startswith("dynamodb.")),
        "s3": sum(n for op, n in per.items() if op.startswith("s3.")),
        "other_services": sum(n for op, n in per.items() if not op.startswith(("dynamodb.", "s3."))),
        "by_operation": per,
        "by_function": {f: n / requests for f, n in sorted(by_function.items())},
        "per_status_read": (len(reads) / status_reads) if status_reads else None,
    }


def report(results: dict[str, Any]) -> str:
    rows = []
    for mode, fig in results["modes"].items():
        ops = ", ".join(f"{op} x{n:g}" for op, n in fig["by_operation"].items())
        rows.append([mode, f"{fig['dynamodb']:g}", f"{fig['s3']:g}", f"{fig['other_services']:g}", ops])
    from measure import table

    out = [
        f"5. AWS calls per request by mode (gpt-image-1.5 1024x1024, {results['requests']} counted requests "
        "each)",
        table(["mode", "DynamoDB", "S3", "other", "calls per request"], rows),
    ]
    for mode, fig in results["modes"].items():
        by_function = ", ".join(f"{f} {n:g}" for f, n in fig["by_function"].items())
        line = f"   {mode}: by function: {by_function}"
        if fig["per_status_read"] is not None:
            line += f"; each status read (GET /v1/images/jobs/{{id}}): {fig['per_status_read']:g}"
        out.append(line)
    return "\n".join(out)
