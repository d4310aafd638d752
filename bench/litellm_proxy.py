"""Benchmark 6: the latency the gateway adds over its upstream, side by side with LiteLLM proxy.

The same image generation (gpt-image-1.5 1024x1024, b64_json), for each trial in a shuffled order:

- direct:   to the upstream emulator's /v1/images/generations;
- imagegw:  through the local stack's API (the real handlers, moto for DynamoDB/S3), which calls that
            emulator;
- LiteLLM:  through LiteLLM proxy, one model configured on the same emulator (OpenAI-compatible, api_base =
            the emulator), no database, run as its own process on 127.0.0.1.

LiteLLM is not a dependency of the project: the benchmark installs `litellm[proxy]` (pinned below) from PyPI
into its own environment, bench/.venv-litellm (git-ignored), on first run, and reuses it afterwards. Only
loopback is used: the proxy runs with LiteLLM's bundled model-cost map (LITELLM_LOCAL_MODEL_COST_MAP) and
with HTTP(S)_PROXY pointed at a closed local port, so any call it might try beyond 127.0.0.1 fails at once.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import measure
from http_client import Body, Target, get_json, json_body, post
from local import ROOT, BenchStack

LITELLM = "litellm[proxy]==1.108.7"
VENV = ROOT / "bench" / ".venv-litellm"
MODEL = "gpt-image-1.5"
PROMPT = "A cute little sea otter floating on its back, holding a pebble"
START_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 900.0


def ensure_installed(progress: Any = print) -> Path:
    """bench/.venv-litellm/bin/litellm, installing it on first use (a few minutes: LiteLLM is heavy)."""
    executable = VENV / "bin" / "litellm"
    stamp = VENV / ".installed"
    if executable.exists() and stamp.exists() and stamp.read_text().strip() == LITELLM:
        return executable
    progress(f"installing {LITELLM} into {VENV.relative_to(ROOT)} (first run only)")
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
    subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", LITELLM],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    stamp.write_text(LITELLM + "\n")
    return executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiteLLMProxy:
    """LiteLLM proxy on 127.0.0.1 with one image model routed to `upstream_base` (".../v1")."""

    def __init__(self, executable: Path, upstream_base: str, upstream_key: str) -> None:
        self.executable = executable
        self.upstream_base = upstream_base
        self.upstream_key = upstream_key
        self.master_key = "sk-bench-" + secrets.token_hex(12)
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="imagegw-bench-litellm-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        path = Path(self._dir.name) / "config.yaml"
        path.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MODEL}\n"
            f"      api_base: {self.upstream_base}\n"
            f"      api_key: {self.upstream_key}\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
            "general_settings:\n"
            f"  master_key: {self.master_key}\n"
        )
        return path

    def _env(self) -> dict[str, str]:
        drop = ("AWS_", "IMAGEGW_", "POWERTOOLS_", "OPENAI_", "DATABASE_URL", "LITELLM_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        dead_end = "http://127.0.0.1:9"  # nothing listens there: a call beyond loopback fails at once
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_LOG="ERROR",
            HTTP_PROXY=dead_end,
            HTTPS_PROXY=dead_end,
            ALL_PROXY=dead_end,
            NO_PROXY="127.0.0.1,localhost",
            PYTHONDONTWRITEBYTECODE="",
        )
        return env

    def start(self) -> LiteLLMProxy:
        log = open(Path(self._dir.name) / "proxy.log", "wb")  # noqa: SIM115 - closed with the process
        self._process = subprocess.Popen(
            [
                str(self.executable),
                "--config",
                str(self._config()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
            ],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"LiteLLM proxy exited ({self._process.returncode}): {self.log_tail()}")
            try:
                get_json(self.url + "/health/liveliness", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"LiteLLM proxy did not start within {START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        path = Path(self._dir.name) / "proxy.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=15)
        self._dir.cleanup()

    def target(self) -> Target:
        return Target(self.url + "/v1/images/generations", self.master_key)


def _timed(target: Target, body: Body, what: str) -> float:
    answer = post(target, body)
    if answer.status != 200:
        raise RuntimeError(f"{what}: HTTP {answer.status}: {answer.payload[:300]!r}")
    data = answer.json().get("data") or [{}]
    if not data[0].get("b64_json"):
        raise RuntimeError(f"{what}: no image in the answer: {answer.payload[:300]!r}")
    return answer.seconds


def run(stack: BenchStack, *, trials: int, progress: Any = print, seed: int = 3) -> dict[str, Any]:
    executable = ensure_installed(progress)
    emulator = stack.stack.emulator
    progress("starting LiteLLM proxy on 127.0.0.1 (its start-up takes a while)")
    proxy = LiteLLMProxy(executable, emulator.base_url + "/v1", emulator.api_key).start()
    try:
        body = json_body({"model": MODEL, "prompt": PROMPT, "size": "1024x1024"})
        arms = {
            "direct": stack.direct("/images/generations"),
            "imagegw": stack.gateway("/images/generations"),
            "litellm": proxy.target(),
        }
        for _ in range(2):  # warm-up: containers, clients, connection pools
            for name, target in arms.items():
                _timed(target, body, name)
        rng = random.Random(seed)
        samples: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(trials):
            order = list(arms)
            rng.shuffle(order)
            for name in order:
                samples[name].append(measure.ms(_timed(arms[name], body, name)))
            stack.reset_emulator()
    finally:
        proxy.stop()
    return _figures(samples, trials)


def _figures(samples: dict[str, list[float]], trials: int) -> dict[str, Any]:
    direct = samples["direct"]
    out: dict[str, Any] = {"trials": trials, "litellm": LITELLM, "arms": {}}
    for name, values in samples.items():
        out["arms"][name] = {
            "ms": measure.summary(values),
            "added_ms": measure.summary(measure.differences(values, direct)),
            "ratio_of_medians": measure.median(values) / measure.median(direct),
        }
    out["imagegw_vs_litellm_added"] = (
        out["arms"]["imagegw"]["added_ms"]["median"] / out["arms"]["litellm"]["added_ms"]["median"]
    )
    return out


LABELS = {
    "direct": "direct to the upstream (emulator)",
    "imagegw": "imagegw (local stack)",
    "litellm": "LiteLLM proxy",
}


def report(results: dict[str, Any]) -> str:
    f, r, d = measure.fmt_ms, measure.fmt_ratio, measure.fmt_delta
    rows = [
        [
            LABELS[name],
            f"{f(fig['ms']['median'])} / {f(fig['ms']['p90'])}",
            d(fig["added_ms"]["median"]) if name != "direct" else "-",
            r(fig["ratio_of_medians"]),
        ]
        for name, fig in results["arms"].items()
    ]
    return "\n".join(
        [
            f"6. Added latency over the upstream, imagegw vs LiteLLM proxy ({results['trials']} interleaved "
            f"trials, gpt-image-1.5 1024x1024 b64_json, fresh connection per request; {results['litellm']})",
            measure.table(["path", "ms med / p90", "added ms (med)", "/ direct"], rows),
            f"   imagegw's added time / LiteLLM's: {r(results['imagegw_vs_litellm_added'])}",
        ]
    )
