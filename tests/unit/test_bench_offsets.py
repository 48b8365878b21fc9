"""make bench reports what the broker appended per finished application, per topic."""

from devtools.bench.pipeline import offsets_per_app


def test_growth_per_application_largest_first_with_the_total():
    before = {"tongban.application.received": 100, "tongban-intake-changelog": 50, "tongban.application.routed": 7}
    after = {"tongban.application.received": 140, "tongban-intake-changelog": 130, "tongban.application.routed": 7}
    assert offsets_per_app(before, after, 20) == {
        "total": 6.0, "tongban-intake-changelog": 4.0, "tongban.application.received": 2.0}


def test_a_topic_first_seen_at_the_end_counts_from_zero_and_no_application_gives_nothing():
    dead_letters = "tongban.dlq.tongban-intake"
    assert offsets_per_app({}, {dead_letters: 3}, 3) == {"total": 1.0, dead_letters: 1.0}
    assert offsets_per_app({"t": 1}, {"t": 5}, 0) == {}
