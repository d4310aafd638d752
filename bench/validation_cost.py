"""Benchmark 4: the cost of `parse_request` + `validate` per request, in-process (timeit).

Cases: a JSON generation (the body of benchmark 1's gpt-image-1.5 scenario), a multipart edit with one
1024x1024 PNG (benchmark 1's edit) and a multipart edit with four. Repeats of the cases are interleaved;
each repeat runs the function enough times to take ~0.1 s (0.05 s with --quick). The report puts the median
per-request cost next to the gateway's added time from benchmark 1 (`fraction of overhead`).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

import measure
from gateway_overhead import PROMPT
from http_client import Body, json_body, multipart_body

from imagegw.domain import HttpRequest, Operation
from imagegw.request.catalog import Catalog
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate


def cases(pngs: list[bytes]) -> dict[str, tuple[str, Operation, Body]]:
    fields = {"model": "gpt-image-1.5", "prompt": PROMPT, "size": "1024x1024"}
    return {
        "json_generation": (
            "JSON generation (gpt-image-1.5)",
            "generations",
            json_body({"model": "gpt-image-1.5", "prompt": PROMPT, "size": "1024x1024"}),
        ),
        "multipart_edit_1": (
            f"multipart edit, 1 PNG ({len(pngs[0]) / 1e6:.1f} MB)",
            "edits",
            multipart_body(fields, [("image", "a.png", "image/png", pngs[0])]),
        ),
        "multipart_edit_4": (
            f"multipart edit, 4 PNGs ({sum(len(p) for p in pngs[:4]) / 1e6:.1f} MB)",
            "edits",
            multipart_body(fields, [("image[]", f"{i}.png", "image/png", p) for i, p in enumerate(pngs[:4])]),
        ),
    }


def _functions(operation: Operation, body: Body, catalog: Catalog) -> dict[str, Callable[[], Any]]:
    http = HttpRequest(
        method="POST",
        path=f"/v1/images/{operation}",
        headers={"content-type": body.content_type, "authorization": "Bearer sk-bench"},
        body=body.data,
        request_id="req_bench",
    )
    parsed = parse_request(operation, http)  # validate() only fills image facts: safe to repeat
    return {
        "parse": lambda: parse_request(operation, http),
        "validate": lambda: validate(parsed, catalog),
        "total": lambda: validate(parse_request(operation, http), catalog),
    }


def run(pngs: list[bytes], *, repeats: int, target_s: float) -> dict[str, Any]:
    catalog = Catalog.load()
    timers: dict[tuple[str, str], tuple[timeit.Timer, int]] = {}
    labels = {}
    for key, (label, operation, body) in cases(pngs).items():
        labels[key] = label
        for part, fn in _functions(operation, body, catalog).items():
            fn()  # warm: lazy imports (Pillow for image headers), regex compilation
            timer = timeit.Timer(fn)
            once = timer.timeit(1)
            number = max(1, min(20_000, int(target_s / max(once, 1e-7))))
            timers[(key, part)] = (timer, number)
    per_call: dict[tuple[str, str], list[float]] = {k: [] for k in timers}
    for _ in range(repeats):
        for k, (timer, number) in timers.items():
            per_call[k].append(timer.timeit(number) / number * 1e6)  # microseconds
    results: dict[str, Any] = {"repeats": repeats, "cases": {}}
    for key, label in labels.items():
        results["cases"][key] = {
            "label": label,
            "total_us": measure.summary(per_call[(key, "total")]),
            "parse_us": measure.summary(per_call[(key, "parse")]),
            "validate_us": measure.summary(per_call[(key, "validate")]),
        }
    return results


# Which benchmark-1 scenario each case is compared with.
OVERHEAD_SCENARIO = {
    "json_generation": "gpt15_1024_b64",
    "multipart_edit_1": "gpt15_edit_1024",
    "multipart_edit_4": "gpt15_edit_1024",
}


def attach_overhead(results: dict[str, Any], overhead: dict[str, Any] | None) -> None:
    """Add each case's share of the gateway's added time (gateway - direct) and of the handler's."""
    if not overhead:
        return
    for key, case in results["cases"].items():
        scenario = overhead["scenarios"].get(OVERHEAD_SCENARIO[key])
        if scenario is None:
            continue
        total_ms = case["total_us"]["median"] / 1000
        case["compared_with"] = scenario["label"]
        case["gateway_added_ms"] = scenario["added_ms"]["median"]
        case["fraction_of_gateway_added"] = total_ms / scenario["added_ms"]["median"]
        case["fraction_of_handler_added"] = total_ms / scenario["handler_added_ms"]["median"]


def report(results: dict[str, Any]) -> str:
    rows = []
    for case in results["cases"].values():
        rows.append(
            [
                case["label"],
                f"{measure.fmt_us(case['total_us']['median'])} / {measure.fmt_us(case['total_us']['p90'])}",
                measure.fmt_us(case["parse_us"]["median"]),
                measure.fmt_us(case["validate_us"]["median"]),
                measure.fmt_pct(case.get("fraction_of_gateway_added", float("nan"))),
                measure.fmt_pct(case.get("fraction_of_handler_added", float("nan"))),
            ]
        )
    return "\n".join(
        [
            "4. Validation cost: parse_request + validate, in-process "
            f"({results['repeats']} interleaved repeats)",
            "   (med / p90 of per-call means; '/ gateway added' = share of benchmark 1's median added ms)",
            measure.table(
                [
                    "request",
                    "parse+validate us",
                    "parse us",
                    "validate us",
                    "/ gateway added",
                    "/ handler added",
                ],
                rows,
            ),
        ]
    )
