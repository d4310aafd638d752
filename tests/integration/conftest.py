"""The integration tier: the real handler modules, moto's server and the upstream emulator, in-process."""

import pytest
from helpers.stack import in_process_stack

from imagegw_dev.emulator import Emulator


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """The local stack in this process (port 0); the environment it sets is restored afterwards."""
    with in_process_stack(tmp_path_factory.mktemp("state")) as stack:
        yield stack


@pytest.fixture(scope="session")
def _emulator_server():
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emu(_emulator_server):
    """The upstream emulator (no API key: Bedrock's wire is signed, not keyed), with its recorded requests
    and faults cleared before and after the test."""
    _emulator_server.reset()
    yield _emulator_server
    _emulator_server.reset()
