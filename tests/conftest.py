"""Fixtures shared by the tests."""

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


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A local gRPC CA with the service and caller certificates (`make grpc-certs` in a
    temporary directory), for in-process servers over mutual TLS. A module that needs other
    certificates defines its own `tls`."""
    from tongban.ops import certs

    directory = tmp_path_factory.mktemp("tls")
    certs.setup(directory)
    return directory
