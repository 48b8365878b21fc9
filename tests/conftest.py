"""Fixtures shared by the integration and end-to-end tests."""

import pytest

from tests.support import drop_namespace, new_namespace


@pytest.fixture(scope="module")
def namespace():
    """Each test module gets its own namespace of topics, groups, ACLs and databases, dropped after it."""
    namespace = new_namespace()
    yield namespace
    drop_namespace(namespace)
