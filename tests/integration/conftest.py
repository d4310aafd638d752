"""The integration tier: the real handler modules, moto's server and the upstream emulator, in-process."""

import os

import pytest

from imagegw_dev.local_stack import LocalStack, StackConfig


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """The local stack in this process (port 0); the environment it sets is restored afterwards."""
    saved = dict(os.environ)
    stack = LocalStack(
        StackConfig(
            port=0, quiet=True, api_key="sk-int-" + "i" * 40, state_dir=tmp_path_factory.mktemp("state")
        )
    ).start()
    try:
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
