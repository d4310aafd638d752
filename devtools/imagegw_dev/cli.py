"""The `imagegw` console command: `dev` (the local stack), `emulator` (the upstream test double), `keys`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagegw_dev.local_stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"dev": dev, "emulator": emulator, "keys": keys}
    if not argv or argv[0] not in commands:
        print(
            "usage: imagegw {dev,emulator,keys} ...\n\n"
            "  dev        run the local stack (API on 127.0.0.1:3000, moto, upstream emulator)\n"
            "  emulator   run the upstream emulator alone (a test double of upstream image services)\n"
            "  keys       manage API keys: create, list, show, revoke, usage",
            file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return commands[argv[0]](argv[1:])


def emulator(argv: list[str]) -> int:
    from imagegw_dev.emulator import main as emulator_main

    return emulator_main(argv)


def keys(argv: list[str]) -> int:
    from imagegw_dev.admin import main as admin_main

    return admin_main(argv)


def dev(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imagegw dev",
        description=(
            "Run the local stack in the foreground: the API on 127.0.0.1 (PORT, default 3000), moto's "
            "server for S3/DynamoDB/SQS, the jobs worker, and the upstream emulator, or the OpenAI-compatible"
            " upstream named by IMAGEGW_UPSTREAM_BASE_URL and IMAGEGW_UPSTREAM_API_KEY. "
            "IMAGEGW_DEV_API_KEY fixes the API key."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--state-dir", default=None, help="where local.json is written (default .imagegw/)")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)

    from pathlib import Path

    from imagegw_dev.local_stack import LocalStack, StackConfig

    base_url = os.environ.get("IMAGEGW_UPSTREAM_BASE_URL") or None
    upstream_key = os.environ.get("IMAGEGW_UPSTREAM_API_KEY") or None
    if bool(base_url) != bool(upstream_key):
        print("Set both IMAGEGW_UPSTREAM_BASE_URL and IMAGEGW_UPSTREAM_API_KEY, or neither.", file=sys.stderr)
        return 2
    config = StackConfig(
        host=args.host,
        port=args.port,
        api_key=os.environ.get("IMAGEGW_DEV_API_KEY") or None,
        upstream_base_url=base_url,
        upstream_api_key=upstream_key,
        quiet=args.quiet,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )
    # Installed explicitly (a shell that starts `make dev` in the background leaves SIGINT ignored) and
    # before anything starts: a Ctrl-C during start-up stops the stack once it is up, never half-way.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    stack = LocalStack(config).start()
    _print_ready(stack, base_url, time.monotonic() - started)
    try:
        stop.wait()
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


def _print_ready(stack: LocalStack, base_url: str | None, seconds: float) -> None:
    upstream = base_url or f"{stack.emulator.base_url} (built-in emulator, a test double)"
    print(
        f"imagegw local stack ready in {seconds:.1f}s\n"
        f"  API      {stack.api_url}\n"
        f"  API key  {stack.api_key}\n"
        f"  upstream {upstream}\n"
        f"  AWS      {stack.resources.endpoint_url if stack.resources else ''} (moto)\n"
        "Try:\n"
        f"  curl {stack.api_url}/images/generations -H 'Content-Type: application/json' "
        f"-H 'Authorization: Bearer {stack.api_key}' "
        '-d \'{"model":"dall-e-3","prompt":"A cute little sea otter","n":1,"size":"1024x1024"}\'\n'
        "Ctrl-C stops.",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
