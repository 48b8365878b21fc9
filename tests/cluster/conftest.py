"""Fixtures of the three-broker cluster test (`make cluster-test`; infra/scripts/cluster.sh,
docs/cluster.md): the namespace cluster.sh declared with the production overlay, and the
cluster's brokers, which a test kills and brings back."""

from __future__ import annotations

import os

import pytest

from tests.cluster.nodes import Cluster


@pytest.fixture(scope="module")
def namespace():
    """The namespace cluster.sh applied infra/topics.toml to (`tongban topics apply --overlay
    production`, `tongban acls apply`)."""
    namespace = os.environ.get("TONGBAN_CLUSTER_NAMESPACE")
    if not namespace:
        pytest.fail("the cluster tests run through `make cluster-test`, which declares their namespace")
    return namespace


def pytest_sessionfinish(session, exitstatus):
    """Drop that namespace's topics and databases, whether or not a test used it, so the
    cluster's brokers do not recover ever more partitions when they restart."""
    namespace = os.environ.get("TONGBAN_CLUSTER_NAMESPACE")
    if namespace:
        from tests.support import drop_namespace

        drop_namespace(namespace)


@pytest.fixture
async def cluster():
    """The brokers; whatever a test killed is started again afterwards, pass or fail, and the
    next test begins with every ISR complete."""
    cluster = Cluster()
    yield cluster
    for broker in sorted(cluster.killed):
        await cluster.start(broker)
    await cluster.fully_replicated()
