"""The local stack in this process, for the tiers that need one running."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from imagegw_dev.local_stack import LocalStack, StackConfig


@contextlib.contextmanager
def in_process_stack(state_dir: Path) -> Iterator[LocalStack]:
    """The local stack on a free port; stopped, and the environment it sets restored, on exit.

    While it runs, its SQS event source polls the jobs queue: a test that uses moto's in-process mock
    (mock_aws) must not run beside it, so the stack lives only as long as the tests that asked for it.
    """
    saved = dict(os.environ)
    stack = LocalStack(StackConfig(port=0, quiet=True, api_key="sk-int-" + "i" * 40, state_dir=state_dir))
    try:
        yield stack.start()
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
