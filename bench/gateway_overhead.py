"""Benchmark 1: what the gateway adds to a request, against calling the same upstream emulator directly.

For each scenario and trial, in a shuffled order (interleaved, so drift hits every arm alike):

- direct:   the client's request straight to the emulator's /v1/images/...
- gateway:  the same request through the local stack's HTTP API (which calls that emulator)
- handler:  the same request as an API Gateway event, run in-process by the function's warm container
            (`function_pool(name).invoke(event)`): the Lambda part of the gateway, without the local
            HTTP front (which API Gateway replaces in AWS)
- upstream: when the gateway translates the request (dall-e-2/3 are served by gpt-image-1.5), the request
            the gateway actually sends upstream, sent directly: the baseline for the gateway's own work

Then, with botocore and requests timed in-process (`breakdown`), where the handler's time goes: AWS calls
(DynamoDB, S3: moto locally), the upstream HTTP call, and the rest (Python in the handler).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import measure
from http_client import Answer, Body, KeepAlive, json_body, multipart_body, post
from local import BenchStack

PROMPT = "A cute little sea otter floating on its back, holding a pebble"
HOT_SPOT_MS = 50.0
STALL_MS = 20.0  # a loopback read of < 100 kB that takes longer is waiting on TCP, not on bytes


class BenchError(RuntimeError):
    """A request the benchmark relies on did not succeed: the figures would be meaningless."""


@dataclass
class Scenario:
    key: str
    label: str
    path: str  # after /v1
    body: Body
    upstream_body: Body | None = None  # what the gateway sends upstream, when it is another request
    upstream_note: str = ""


def scenarios(edit_png: bytes) -> list[Scenario]:
    edit = multipart_body(
        {"model": "gpt-image-1.5", "prompt": PROMPT, "size": "1024x1024"},
        [("image", "otter.png", "image/png", edit_png)],
    )
    return [
        Scenario(
            "gpt15_1024_b64",
            "gpt-image-1.5 gen 1024x1024 b64_json",
            "/images/generations",
            json_body({"model": "gpt-image-1.5", "prompt": PROMPT, "size": "1024x1024"}),
        ),
        Scenario(
            "dalle2_256_b64",
            "dall-e-2 gen 256x256 b64_json (small)",
            "/images/generations",
            json_body(
                {"model": "dall-e-2", "prompt": PROMPT, "size": "256x256", "response_format": "b64_json"}
            ),
        ),
        Scenario(
            "dalle3_1024_url",
            "dall-e-3 gen 1024x1024 url",
            "/images/generations",
            json_body({"model": "dall-e-3", "prompt": PROMPT, "size": "1024x1024", "response_format": "url"}),
        ),
        Scenario(
            "gpt15_edit_1024",
            f"gpt-image-1.5 edit, 1 PNG {len(edit_png) / 1e6:.1f} MB, b64_json",
            "/images/edits",
            edit,
        ),
    ]


# ---------------------------------------------------------------------------------------------- checks


def _check_http(answer: Answer, what: str) -> None:
    if answer.status != 200:
        raise BenchError(f"{what}: HTTP {answer.status}: {answer.payload[:300]!r}")


def _check_data(payload: Any, what: str) -> None:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not data or not (data[0].get("b64_json") or data[0].get("url")):
        raise BenchError(f"{what}: no image in the answer: {str(payload)[:300]}")


def _check_result(result: dict[str, Any], what: str) -> None:
    if result.get("statusCode") != 200:
        raise BenchError(
            f"{what}: handler answered {result.get('statusCode')}: {str(result.get('body'))[:300]}"
        )


# ---------------------------------------------------------------------------------------------- arms


def _arms(stack: BenchStack, sc: Scenario) -> dict[str, Callable[[], float]]:
    direct, gateway = stack.direct(sc.path), stack.gateway(sc.path)

    def run_direct() -> float:
        answer = post(direct, sc.body)
        _check_http(answer, f"{sc.key} direct")
        return answer.seconds

    def run_gateway() -> float:
        answer = post(gateway, sc.body)
        _check_http(answer, f"{sc.key} gateway")
        return answer.seconds

    def run_handler() -> float:
        function, event = stack.event(sc.path, sc.body)  # built outside the timed part
        started = time.perf_counter()
        result = stack.invoke(function, event)
        elapsed = time.perf_counter() - started
        _check_result(result, f"{sc.key} handler")
        return elapsed

    arms: dict[str, Callable[[], float]] = {
        "direct": run_direct,
        "gateway": run_gateway,
        "handler": run_handler,
    }
    if sc.upstream_body is not None:
        upstream_body = sc.upstream_body

        def run_upstream() -> float:
            answer = post(direct, upstream_body)
            _check_http(answer, f"{sc.key} upstream-equivalent")
            return answer.seconds

        arms["upstream"] = run_upstream
    return arms


def _discover_upstream(stack: BenchStack, sc: Scenario) -> None:
    """Send one request through the gateway and read, from the emulator, what the gateway sent upstream."""
    if not sc.body.content_type.startswith("application/json"):
        return  # multipart edits of a GPT model are forwarded as they are (same model, same size)
    stack.reset_emulator()
    answer = post(stack.gateway(sc.path), sc.body)
    _check_http(answer, f"{sc.key} gateway")
    recorded = [r for r in stack.upstream_requests() if r.get("path", "").endswith(sc.path)]
    if not recorded or not isinstance(recorded[-1].get("json"), dict):
        return
    sent = json.loads(sc.body.data)
    upstream = recorded[-1]["json"]
    if upstream.get("model") != sent.get("model") or upstream.get("size") != sent.get("size"):
        sc.upstream_body = json_body(upstream)
        sc.upstream_note = (
            f"upstream: {upstream.get('model')} {upstream.get('size')} quality={upstream.get('quality')}"
            + (", resized after" if upstream.get("size") != sent.get("size") else "")
        )


def _warm(stack: BenchStack, sc: Scenario, rounds: int) -> None:
    gateway_answer = post(stack.gateway(sc.path), sc.body)
    _check_http(gateway_answer, f"{sc.key} gateway")
    _check_data(gateway_answer.json(), f"{sc.key} gateway")
    direct_answer = post(stack.direct(sc.path), sc.body)
    _check_http(direct_answer, f"{sc.key} direct")
    _check_data(direct_answer.json(), f"{sc.key} direct")
    arms = _arms(stack, sc)
    for _ in range(rounds):
        for run in arms.values():
            run()


# ---------------------------------------------------------------------------------------------- run


def run(
    stack: BenchStack,
    edit_png: bytes,
    *,
    trials: int,
    keepalive_trials: int,
    breakdown_trials: int,
    seed: int = 1,
) -> dict[str, Any]:
    rng = random.Random(seed)
    scs = scenarios(edit_png)
    for sc in scs:
        _warm(stack, sc, rounds=2)
        _discover_upstream(stack, sc)
    stack.reset_emulator()
    samples: dict[str, dict[str, list[float]]] = {sc.key: {} for sc in scs}
    arms = {sc.key: _arms(stack, sc) for sc in scs}
    for _ in range(trials):
        for sc in scs:
            names = list(arms[sc.key])
            rng.shuffle(names)
            for name in names:
                samples[sc.key].setdefault(name, []).append(arms[sc.key][name]())
        stack.reset_emulator()  # the emulator records every request: keep it small

    results: dict[str, Any] = {"trials": trials, "scenarios": {}}
    for sc in scs:
        results["scenarios"][sc.key] = _scenario_figures(sc, samples[sc.key])
    results["keep_alive"] = keep_alive(stack, scs[0], keepalive_trials, rng, results["scenarios"][scs[0].key])
    results["breakdown"] = {sc.key: breakdown(stack, sc, breakdown_trials) for sc in scs}
    return results


def _scenario_figures(sc: Scenario, s: dict[str, list[float]]) -> dict[str, Any]:
    d, g, h = (list(map(measure.ms, s[k])) for k in ("direct", "gateway", "handler"))
    figures: dict[str, Any] = {
        "label": sc.label,
        "path": sc.path,
        "direct_ms": measure.summary(d),
        "gateway_ms": measure.summary(g),
        "handler_ms": measure.summary(h),
        "ratio_gateway_direct": measure.summary(measure.paired(g, d)),
        "ratio_handler_direct": measure.summary(measure.paired(h, d)),
        "added_ms": measure.summary(measure.differences(g, d)),
        "handler_added_ms": measure.summary(measure.differences(h, d)),
        "front_ms": measure.summary(measure.differences(g, h)),
    }
    if "upstream" in s:
        u = list(map(measure.ms, s["upstream"]))
        figures["upstream_note"] = sc.upstream_note
        figures["upstream_direct_ms"] = measure.summary(u)
        figures["ratio_gateway_upstream"] = measure.summary(measure.paired(g, u))
        figures["added_vs_upstream_ms"] = measure.summary(measure.differences(g, u))
    return figures


def keep_alive(
    stack: BenchStack, sc: Scenario, trials: int, rng: random.Random, fresh: dict[str, Any]
) -> dict[str, Any]:
    """The same requests on persistent connections (as SDK clients send them), interleaved."""
    direct, gateway = KeepAlive(stack.direct(sc.path)), KeepAlive(stack.gateway(sc.path))
    try:
        for client in (direct, gateway):  # open the connections
            _check_http(client.post(sc.body), f"{sc.key} keep-alive")
        d: list[float] = []
        g: list[float] = []
        for _ in range(trials):
            order = [(direct, d), (gateway, g)]
            rng.shuffle(order)
            for client, sink in order:
                answer = client.post(sc.body)
                _check_http(answer, f"{sc.key} keep-alive")
                sink.append(measure.ms(answer.seconds))
    finally:
        direct.close()
        gateway.close()
    return {
        "scenario": sc.key,
        "direct_ms": measure.summary(d),
        "gateway_ms": measure.summary(g),
        "ratio_gateway_direct": measure.summary(measure.paired(g, d)),
        "added_ms": measure.summary(measure.differences(g, d)),
        "gateway_penalty_vs_fresh_ms": measure.median(g) - fresh["gateway_ms"]["median"],
        "direct_penalty_vs_fresh_ms": measure.median(d) - fresh["direct_ms"]["median"],
    }


# ---------------------------------------------------------------------------------------------- breakdown


@dataclass
class _Calls:
    aws: list[tuple[str, float]] = field(default_factory=list)  # ("dynamodb.UpdateItem", seconds)
    upstream: list[float] = field(default_factory=list)  # until the upstream's status line and headers
    upstream_body: list[float] = field(default_factory=list)  # reading the body (the provider streams it)

    def clear(self) -> None:
        self.aws.clear()
        self.upstream.clear()
        self.upstream_body.clear()


@contextlib.contextmanager
def _instrumented() -> Iterator[_Calls]:
    """Time botocore API calls, requests' sends and body reads made on this thread (the handler's), then
    restore them. Other threads (the local stack's servers, the SQS pollers) are left alone.
    """
    import botocore.client
    import requests

    calls = _Calls()
    me = threading.get_ident()
    original_api = botocore.client.BaseClient._make_api_call
    original_send = requests.Session.send
    original_iter = requests.Response.iter_content

    def timed_api(self: Any, operation: str, params: Any) -> Any:
        if threading.get_ident() != me:
            return original_api(self, operation, params)
        started = time.perf_counter()
        try:
            return original_api(self, operation, params)
        finally:
            name = f"{self.meta.service_model.service_name}.{operation}"
            calls.aws.append((name, time.perf_counter() - started))

    def timed_send(self: Any, request: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != me:
            return original_send(self, request, **kwargs)
        started = time.perf_counter()
        try:
            return original_send(self, request, **kwargs)
        finally:
            calls.upstream.append(time.perf_counter() - started)

    def timed_iter(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if threading.get_ident() != me:
            yield from original_iter(self, *args, **kwargs)
            return
        started = time.perf_counter()
        try:
            yield from original_iter(self, *args, **kwargs)
        finally:
            calls.upstream_body.append(time.perf_counter() - started)

    botocore.client.BaseClient._make_api_call = timed_api  # type: ignore[method-assign]
    requests.Session.send = timed_send  # type: ignore[method-assign]
    requests.Response.iter_content = timed_iter  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = original_api  # type: ignore[method-assign]
        requests.Session.send = original_send  # type: ignore[method-assign]
        requests.Response.iter_content = original_iter  # type: ignore[method-assign]


def breakdown(stack: BenchStack, sc: Scenario, trials: int) -> dict[str, Any]:
    totals: list[float] = []
    aws: list[float] = []
    upstream: list[float] = []
    body: list[float] = []
    cpu_thread: list[float] = []
    cpu_process: list[float] = []
    aws_count: list[float] = []
    ops: Counter[str] = Counter()
    with _instrumented() as calls:
        for _ in range(trials):
            function, event = stack.event(sc.path, sc.body)
            calls.clear()
            thread0, process0 = time.thread_time(), time.process_time()
            started = time.perf_counter()
            result = stack.invoke(function, event)
            totals.append(measure.ms(time.perf_counter() - started))
            cpu_thread.append(measure.ms(time.thread_time() - thread0))
            cpu_process.append(measure.ms(time.process_time() - process0))
            _check_result(result, f"{sc.key} handler (instrumented)")
            aws.append(measure.ms(sum(t for _, t in calls.aws)))
            aws_count.append(len(calls.aws))
            upstream.append(measure.ms(sum(calls.upstream)))
            body.append(measure.ms(sum(calls.upstream_body)))
            ops.update(name for name, _ in calls.aws)
    other = [t - a - u - b for t, a, u, b in zip(totals, aws, upstream, body, strict=True)]
    return {
        "handler_ms": measure.summary(totals),
        "aws_ms": measure.summary(aws),
        "aws_calls": measure.median(aws_count),
        "aws_ops_per_request": {name: count / trials for name, count in sorted(ops.items())},
        "upstream_ms": measure.summary(upstream),
        "upstream_body_ms": measure.summary(body),
        "other_ms": measure.summary(other),
        # CPU while the handler ran: its own thread (imagegw, Powertools, botocore and requests client
        # work), and the whole process (plus moto, the emulator and the SQS pollers, all in-process).
        "cpu_handler_thread_ms": measure.summary(cpu_thread),
        "cpu_process_ms": measure.summary(cpu_process),
    }


# ---------------------------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    f, r, d = measure.fmt_ms, measure.fmt_ratio, measure.fmt_delta

    def pair(summary: dict[str, Any], fmt: Any = f) -> str:
        return f"{fmt(summary['median'])} / {fmt(summary['p90'])}"

    scenarios = results["scenarios"]
    out = [
        f"1. Gateway overhead ({results['trials']} interleaved trials per arm, fresh connection per request)",
        measure.table(
            [
                "scenario",
                "direct ms",
                "gateway ms",
                "gateway/direct",
                "added ms",
                "handler/direct",
                "HTTP front ms",
            ],
            [
                [
                    fig["label"],
                    pair(fig["direct_ms"]),
                    pair(fig["gateway_ms"]),
                    pair(fig["ratio_gateway_direct"], r),
                    d(fig["added_ms"]["median"]),
                    r(fig["ratio_handler_direct"]["median"]),
                    d(fig["front_ms"]["median"]),
                ]
                for fig in scenarios.values()
            ],
        ),
        "   (med / p90; added = gateway - direct per trial; handler = in-process invoke of the same event;",
        "    HTTP front = gateway - handler: the local HTTP server, which API Gateway replaces in AWS)",
    ]
    translated = [fig for fig in scenarios.values() if "upstream_direct_ms" in fig]
    if translated:
        out += [
            "",
            "   translated models, against the request the gateway really sends upstream, sent direct:",
            measure.table(
                ["scenario", "that direct ms", "gateway/that", "added ms", "what the gateway sends"],
                [
                    [
                        fig["label"],
                        pair(fig["upstream_direct_ms"]),
                        pair(fig["ratio_gateway_upstream"], r),
                        d(fig["added_vs_upstream_ms"]["median"]),
                        fig["upstream_note"],
                    ]
                    for fig in translated
                ],
            ),
        ]
    ka = results["keep_alive"]
    out += [
        "",
        f"   keep-alive connections (as SDKs send), {scenarios[ka['scenario']]['label']}:",
        f"   direct {pair(ka['direct_ms'])} ms, gateway {pair(ka['gateway_ms'])} ms, "
        f"gateway/direct {pair(ka['ratio_gateway_direct'], r)}; medians against fresh connections: "
        f"gateway {d(ka['gateway_penalty_vs_fresh_ms'])} ms, direct {d(ka['direct_penalty_vs_fresh_ms'])} ms",
        "",
        "   where the handler's time goes (in-process invoke, instrumented; medians per request, ms):",
        measure.table(
            [
                "scenario",
                "handler",
                "upstream headers",
                "upstream body med/p90",
                "AWS calls",
                "AWS (moto)",
                "other Python",
                "CPU handler/process",
            ],
            [
                [
                    scenarios[key]["label"],
                    f(b["handler_ms"]["median"]),
                    f(b["upstream_ms"]["median"]),
                    pair(b["upstream_body_ms"]),
                    f"{b['aws_calls']:g}",
                    f(b["aws_ms"]["median"]),
                    f(b["other_ms"]["median"]),
                    f"{f(b['cpu_handler_thread_ms']['median'])} / {f(b['cpu_process_ms']['median'])}",
                ]
                for key, b in results["breakdown"].items()
            ],
        ),
    ]
    for key, b in results["breakdown"].items():
        ops = ", ".join(f"{name} x{count:g}" for name, count in b["aws_ops_per_request"].items())
        out.append(f"   AWS calls per request, {scenarios[key]['label']}: {ops}")
    stalled = [
        scenarios[key]["label"]
        for key, b in results["breakdown"].items()
        if b["upstream_body_ms"]["p90"] > STALL_MS
    ]
    if stalled:
        out += [
            "",
            f"   STALL: reading the upstream body took > {STALL_MS:.0f} ms (p90) for: {'; '.join(stalled)}.",
            "   The body is written by then: Nagle + delayed ACK on the emulator's kept-alive socket, a",
            "   local-stack artifact (docs/benchmarks.md; --tcp-nodelay shows the stack without it).",
        ]
    hot = [fig["label"] for fig in scenarios.values() if fig["added_ms"]["median"] > HOT_SPOT_MS]
    if hot:
        out += ["", f"   HOT SPOT: the gateway adds > {HOT_SPOT_MS:.0f} ms over direct for: {'; '.join(hot)}"]
    return "\n".join(out)
