"""Router: retries, backoff, retry-after, failover, deadline and cool-down, with scripted fake providers.

A fake provider type is registered the way a Bedrock provider would be; time is a fake clock that the
fake `sleep` and the fake upstream latency advance, so every test is instant.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers.fakes import FakeClock

from imagegw.domain import GeneratedImage, ImageRequest, UpstreamResult
from imagegw.errors import InvalidRequest, RequestTooLarge, UpstreamError, UpstreamTimeout
from imagegw.request.catalog import Catalog
from imagegw.settings import Settings
from imagegw.upstream import (
    PROVIDER_TYPES,
    CooldownTracker,
    RouteFault,
    TransientFailure,
    UpstreamMalformed,
    UpstreamRejected,
    build_router,
)
from imagegw.upstream.resilience import backoff_delay, order_routes

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16 + b"IEND\xaeB`\x82"
SECRET_HOST = "secret-resource.openai.azure.com"
SECRET_KEY = "sk-live-abcdefghijklmnop0123"


@dataclass
class Script:
    """What a fake upstream does on each call: an exception to raise, or None to succeed."""

    steps: list[BaseException | None] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    latency: float = 0.1
    default: BaseException | None = None


class FakeProvider:
    def __init__(self, name: str, script: Script, clock: FakeClock) -> None:
        self.name, self.script, self.clock = name, script, clock

    def call(self, **kwargs: Any) -> UpstreamResult:
        self.script.calls.append(kwargs)
        self.clock.now += min(self.script.latency, kwargs["timeout"])
        step = self.script.steps.pop(0) if self.script.steps else self.script.default
        if step is not None:
            raise step
        return UpstreamResult(
            images=[GeneratedImage(PNG)], usage={"total_tokens": 1}, meta={"size": "1024x1024"}
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def scripts(monkeypatch, clock) -> dict[str, Script]:
    table: dict[str, Script] = {"a": Script(), "b": Script(), "c": Script()}
    monkeypatch.setitem(
        PROVIDER_TYPES, "fake", lambda cfg, ctx: FakeProvider(cfg.name, table[cfg.name], clock)
    )
    return table


def routes_doc(models: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {name: {"type": "fake"} for name in ("a", "b", "c")},
        "models": models
        or {
            "gpt-image-1.5": [
                {"provider": "a", "model": "gpt-image-1.5"},
                {"provider": "b", "model": "gpt-image-1.5"},
            ]
        },
        **extra,
    }


@pytest.fixture
def make_router(tmp_path, clock, scripts) -> Callable[..., Any]:
    def make(doc: dict[str, Any] | None = None, *, cooldowns: CooldownTracker | None = None, **settings: Any):
        path = tmp_path / "routes.json"
        path.write_text(json.dumps(doc or routes_doc()))
        values = {"max_attempts": 3, "attempt_timeout_seconds": 60.0, "cooldown_seconds": 30.0, **settings}
        cfg = Settings("b", "k", "u", "j", "i", "q", routes_source=str(path), **values)
        return build_router(
            cfg,
            Catalog.load(),
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(7),
            cooldowns=cooldowns or CooldownTracker(clock),
        )

    return make


def gen(model: str = "gpt-image-1.5", **params: Any) -> ImageRequest:
    return ImageRequest("generations", model, {"prompt": "an otter", "n": 1, "size": "1024x1024", **params})


# ----- retries ---------------------------------------------------------------------------------------


def test_429_then_success_is_retried_once_honouring_retry_after(make_router, scripts, clock):
    scripts["a"].steps = [TransientFailure("429", status=429, retry_after=1.5)]
    result = make_router().call(gen(), deadline=clock.now + 20)
    assert result.route == "a:gpt-image-1.5"
    assert len(scripts["a"].calls) == 2 and not scripts["b"].calls
    assert clock.sleeps == [1.5]


def test_backoff_is_exponential_with_full_jitter_and_capped():
    rng = random.Random(1)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 8.0)]:
        delays = [backoff_delay(failures, base=0.5, cap=8.0, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spans the whole range


def test_server_errors_exhaust_attempts_then_fail_over(make_router, scripts, clock):
    scripts["a"].default = TransientFailure("500", status=500)
    result = make_router().call(gen(), deadline=clock.now + 60)
    assert result.route == "b:gpt-image-1.5"
    assert len(scripts["a"].calls) == 3 and len(scripts["b"].calls) == 1
    assert len(clock.sleeps) == 2 and all(0 <= s <= 1.0 for s in clock.sleeps)


def test_exhausted_routes_raise_upstream_error_502_with_should_retry_false(make_router, scripts, clock):
    scripts["a"].default = scripts["b"].default = TransientFailure("503", status=503)
    with pytest.raises(UpstreamError) as info:
        make_router().call(gen(), deadline=clock.now + 60)
    err = info.value
    assert (err.status, err.code, err.headers["x-should-retry"]) == (502, "upstream_error", "false")
    assert not isinstance(err, UpstreamTimeout)


def test_should_retry_false_fails_over_without_retrying(make_router, scripts, clock):
    scripts["a"].steps = [TransientFailure("500", status=500, retryable=False)]
    assert make_router().call(gen(), deadline=clock.now + 60).route == "b:gpt-image-1.5"
    assert len(scripts["a"].calls) == 1


def test_retry_after_longer_than_the_deadline_fails_over_instead_of_waiting(make_router, scripts, clock):
    scripts["a"].steps = [TransientFailure("429", status=429, retry_after=30)]
    result = make_router().call(gen(), deadline=clock.now + 10)
    assert result.route == "b:gpt-image-1.5" and clock.sleeps == []


# ----- client errors ---------------------------------------------------------------------------------


def test_upstream_400_reaches_the_caller_and_is_neither_retried_nor_failed_over(make_router, scripts, clock):
    scripts["a"].steps = [
        UpstreamRejected(
            f"Invalid value: 'x'. See https://{SECRET_HOST}/docs (key {SECRET_KEY})",
            status=400,
            param="quality",
            code="invalid_value",
        )
    ]
    cooldowns = CooldownTracker(clock)
    with pytest.raises(InvalidRequest) as info:
        make_router(cooldowns=cooldowns).call(gen(), deadline=clock.now + 60)
    err = info.value
    assert (err.status, err.param, err.code) == (400, "quality", "invalid_value")
    assert err.message.startswith("Invalid value: 'x'.")
    assert SECRET_HOST not in err.message and SECRET_KEY not in err.message
    assert len(scripts["a"].calls) == 1 and not scripts["b"].calls
    assert not cooldowns._health  # a client error never counts against the route


def test_upstream_413_becomes_request_too_large(make_router, scripts, clock):
    scripts["a"].steps = [UpstreamRejected("Too big.", status=413)]
    with pytest.raises(RequestTooLarge):
        make_router().call(gen(), deadline=clock.now + 60)


# ----- route faults ----------------------------------------------------------------------------------


def test_malformed_answer_fails_over_without_retrying_the_route(make_router, scripts, clock):
    scripts["a"].steps = [UpstreamMalformed("bad base64")]
    assert make_router().call(gen(), deadline=clock.now + 60).route == "b:gpt-image-1.5"
    assert len(scripts["a"].calls) == 1


def test_malformed_answer_on_the_only_route_is_a_502(make_router, scripts, clock):
    scripts["a"].default = UpstreamMalformed("truncated")
    doc = routes_doc({"gpt-image-1.5": [{"provider": "a", "model": "gpt-image-1.5"}]})
    with pytest.raises(UpstreamError) as info:
        make_router(doc).call(gen(), deadline=clock.now + 60)
    assert info.value.status == 502


def test_bad_credentials_fail_over(make_router, scripts, clock):
    scripts["a"].steps = [RouteFault("401", status=401, credentials_suspect=True)]
    assert make_router().call(gen(), deadline=clock.now + 60).route == "b:gpt-image-1.5"


def test_an_unexpected_exception_is_a_502_without_its_message(make_router, scripts, clock):
    scripts["a"].default = scripts["b"].default = KeyError(f"https://{SECRET_HOST}/x")
    with pytest.raises(UpstreamError) as info:
        make_router().call(gen(), deadline=clock.now + 60)
    assert SECRET_HOST not in info.value.message


# ----- deadline --------------------------------------------------------------------------------------


def test_attempt_timeout_is_capped_by_the_deadline(make_router, scripts, clock):
    make_router(attempt_timeout_seconds=60.0).call(gen(), deadline=clock.now + 5)
    assert 4.5 <= scripts["a"].calls[0]["timeout"] <= 5
    make_router(attempt_timeout_seconds=2.0).call(gen(), deadline=clock.now + 50)
    assert scripts["a"].calls[1]["timeout"] == 2.0


def test_hung_upstream_ends_in_upstream_timeout_before_the_deadline(make_router, scripts, clock):
    for name in ("a", "b"):
        scripts[name].latency = 1e9  # hangs until its timeout
        scripts[name].default = TransientFailure("timed out", timed_out=True)
    start, deadline = clock.now, clock.now + 8
    with pytest.raises(UpstreamTimeout) as info:
        make_router().call(gen(), deadline=deadline)
    assert (info.value.status, info.value.code) == (504, "timeout")
    assert clock.now < deadline and clock.now - start > 7
    assert not scripts["b"].calls  # the first attempt used all the time there was


def test_no_time_left_raises_timeout_without_calling(make_router, scripts, clock):
    with pytest.raises(UpstreamTimeout):
        make_router().call(gen(), deadline=clock.now + 0.1)
    assert not scripts["a"].calls


def test_running_out_of_time_after_server_errors_is_a_502(make_router, scripts, clock):
    scripts["a"].default = scripts["b"].default = TransientFailure("500", status=500)
    scripts["a"].latency = 2.0
    with pytest.raises(UpstreamError) as info:
        make_router(max_attempts=10).call(gen(), deadline=clock.now + 3)
    assert info.value.status == 502


# ----- cool-down -------------------------------------------------------------------------------------


def test_cooldown_skips_a_failing_route_and_returns_after_it(make_router, scripts, clock):
    cooldowns = CooldownTracker(clock)
    router = make_router(cooldowns=cooldowns, max_attempts=1, cooldown_seconds=30.0)
    scripts["a"].default = TransientFailure("500", status=500)
    for _ in range(3):  # three consecutive upstream failures put route a in cool-down
        assert router.call(gen(), deadline=clock.now + 60).route == "b:gpt-image-1.5"
    assert cooldowns.cooling("a:gpt-image-1.5")
    calls_to_a = len(scripts["a"].calls)
    assert router.call(gen(), deadline=clock.now + 60).route == "b:gpt-image-1.5"
    assert len(scripts["a"].calls) == calls_to_a  # skipped: not even tried
    clock.now += 31
    scripts["a"].default = None
    assert router.call(gen(), deadline=clock.now + 60).route == "a:gpt-image-1.5"
    assert not cooldowns.cooling("a:gpt-image-1.5")


def test_client_errors_never_cool_a_route_down(make_router, scripts, clock):
    cooldowns = CooldownTracker(clock)
    router = make_router(cooldowns=cooldowns)
    scripts["a"].default = UpstreamRejected("bad prompt", status=400)
    for _ in range(6):
        with pytest.raises(InvalidRequest):
            router.call(gen(), deadline=clock.now + 60)
    assert not cooldowns.cooling("a:gpt-image-1.5")


def test_with_every_route_cooling_the_least_recently_failed_is_still_tried(make_router, scripts, clock):
    cooldowns = CooldownTracker(clock)
    router = make_router(cooldowns=cooldowns, max_attempts=1)
    for label in ("a:gpt-image-1.5", "b:gpt-image-1.5"):
        for _ in range(3):
            cooldowns.failure(label, threshold=3, seconds=30)
        clock.now += 1  # a failed first, so a is the least recently failed
    result = router.call(gen(), deadline=clock.now + 60)
    assert result.route == "a:gpt-image-1.5"
    assert not scripts["b"].calls


def test_cooldown_state_is_shared_by_routers_of_the_same_container(make_router, scripts, clock):
    cooldowns = CooldownTracker(clock)
    scripts["a"].default = TransientFailure("500", status=500)
    make_router(cooldowns=cooldowns).call(gen(), deadline=clock.now + 60)  # 3 attempts on a, then b
    second = make_router(cooldowns=cooldowns)
    before = len(scripts["a"].calls)
    assert second.call(gen(), deadline=clock.now + 60).route == "b:gpt-image-1.5"
    assert len(scripts["a"].calls) == before


# ----- order and weights -----------------------------------------------------------------------------


def test_weight_picks_the_first_route_among_the_top_priority(make_router, scripts, clock):
    doc = routes_doc(
        {
            "gpt-image-1.5": [
                {"provider": "a", "model": "gpt-image-1.5", "priority": 1, "weight": 3},
                {"provider": "b", "model": "gpt-image-1.5", "priority": 1, "weight": 1},
                {"provider": "c", "model": "gpt-image-1.5", "priority": 2},
            ]
        }
    )
    router = make_router(doc)
    firsts = [router.call(gen(), deadline=clock.now + 60).route for _ in range(400)]
    share_a = firsts.count("a:gpt-image-1.5") / len(firsts)
    assert 0.65 < share_a < 0.85 and "c:gpt-image-1.5" not in firsts


def test_default_order_is_the_list_order():
    from imagegw.upstream.config import parse_routes

    doc = routes_doc({"m": [{"provider": p, "model": "x"} for p in ("c", "a", "b")]})
    routes = parse_routes(doc, {"fake"}).routes_for("m", "generations")
    assert [r.provider for r in order_routes(routes, random.Random(3))] == ["c", "a", "b"]


def test_result_route_label_and_usage_are_returned(make_router, scripts, clock):
    result = make_router().call(gen(), deadline=clock.now + 60)
    assert result.route == "a:gpt-image-1.5" and result.usage == {"total_tokens": 1}


def test_model_without_routes_is_a_502(make_router, scripts, clock):
    doc = routes_doc({"dall-e-3": [{"provider": "a", "model": "gpt-image-1.5"}]})
    with pytest.raises(UpstreamError):
        make_router(doc).call(gen(), deadline=clock.now + 60)


def test_after_a_cooldown_one_failure_cools_again_and_one_success_clears(clock):
    cooldowns = CooldownTracker(clock)
    for _ in range(3):
        cooldowns.failure("r", threshold=3, seconds=30)
    assert cooldowns.cooling("r")
    clock.now += 31
    assert not cooldowns.cooling("r")
    assert cooldowns.failure("r", threshold=3, seconds=30)  # on probation: straight back
    clock.now += 31
    cooldowns.success("r")
    cooldowns.failure("r", threshold=3, seconds=30)
    assert not cooldowns.cooling("r")
