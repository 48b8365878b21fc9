"""Operator tooling for the local platform and any real cluster (topics today; ACLs,
quotas, lag and dead letters later). See `python -m tongban.ops.topics --help`."""
