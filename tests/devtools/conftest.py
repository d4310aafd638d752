"""The local tools' tier: the upstream emulator, the local stack, the admin CLI, the template reader."""

import pytest
from helpers.stack import in_process_stack


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    """The local stack in this process for one test module, so that it never runs beside the tests of
    other tiers that use moto's in-process mock."""
    with in_process_stack(tmp_path_factory.mktemp("state")) as stack:
        yield stack
