"""The integration tier: the real handler modules, moto's server and the upstream emulator, in-process."""

import pytest
from helpers.stack import in_process_stack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """The local stack in this process (port 0); the environment it sets is restored afterwards."""
    with in_process_stack(tmp_path_factory.mktemp("state")) as stack:
        yield stack
