"""Each e2e module gets its own namespace (topics, groups, databases) and its own running stack."""

import pytest

from tests.support import start_stack


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace)
    yield stack
    stack.stop_all()
