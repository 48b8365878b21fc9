"""Fixtures shared by the integration and end-to-end tests."""

import pytest


@pytest.fixture(scope="module")
def namespace():
    """Each test module gets its own namespace of topics, groups, ACLs and databases, dropped after it."""
    # Imported here: tests.support needs the broker's credentials, which unit tests (and
    # mutation runs, which copy no var/) must not.
    from tests.support import drop_namespace, new_namespace

    namespace = new_namespace()
    yield namespace
    drop_namespace(namespace)
