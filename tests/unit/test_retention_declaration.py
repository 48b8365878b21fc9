"""The archive retention declaration (infra/retention.toml): every service with an archive has
its days, none shorter than the replay horizon, and the audit trail is declared as kept."""

import pytest

from tongban import paths
from tongban.ops import retention
from tongban.ops.pii import SERVICES

HORIZON = 30


def write(tmp_path, archive: dict):
    path = tmp_path / "retention.toml"
    path.write_text("[archive]\n" + "".join(f"{k} = {v}\n" for k, v in archive.items()))
    return path


def test_the_shipped_declaration_names_every_archive_and_keeps_the_audit_trail():
    declared = retention.load(paths.retention_file({}), minimum_days=HORIZON)
    assert set(declared.archive_days) == set(SERVICES)
    assert all(days >= HORIZON for days in declared.archive_days.values())
    assert [store for store, _ in declared.kept] == [
        "tongban_datasharing: audit_<chain>_<block> (evidence-access audit trail)"]


@pytest.mark.parametrize(("archive", "error"), [
    ({s: 365 for s in SERVICES if s != "feedback"}, "missing feedback"),
    ({**{s: 365 for s in SERVICES}, "datasharing": 365}, "unknown datasharing"),
    ({**{s: 365 for s in SERVICES}, "delivery": HORIZON - 1}, "at least the replay horizon"),
    ({**{s: 365 for s in SERVICES}, "delivery": '"1y"'}, "whole number of days"),
])
def test_a_declaration_that_misses_a_service_or_keeps_less_than_the_replay_horizon_is_refused(tmp_path, archive,
                                                                                              error):
    with pytest.raises(ValueError, match=error):
        retention.load(write(tmp_path, archive), minimum_days=HORIZON)


def test_the_replay_horizon_days_are_the_least_that_is_accepted(tmp_path):
    declared = retention.load(write(tmp_path, {s: HORIZON for s in SERVICES}), minimum_days=HORIZON)
    assert declared.archive_days["delivery"] == HORIZON
