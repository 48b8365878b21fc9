"""The quick chaos run inside `make test`: 2,000 applications through two instances of every
service while instances are killed (also at the runtime's crash points) and frozen, the
broker restarts, the store is away for 12 s, partners and a data-sharing provider fail and
hostile records arrive. devtools.chaos runs it on a broker and store of its own and counts
at independent sinks; this test reads its figures (var/chaos/quick.json)."""

import json
import subprocess
import sys

import pytest

from devtools.launcher import ROOT

pytestmark = pytest.mark.integration

APPLICATIONS = 2000


def test_nothing_lost_nothing_done_twice_under_chaos():
    out = ROOT / "var" / "chaos" / "quick.json"
    out.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, "-m", "devtools.chaos", "--applications", str(APPLICATIONS),
                          "--deadline", "900", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=1000)
    result = json.loads(out.read_text())
    figures = {k: result.get(k) for k in ("terminal", "lost", "wall_s", "apps_per_s", "failures")}
    assert run.returncode == 0, f"chaos run failed: {figures}\n{run.stderr[-3000:]}"
    assert result["terminal"] == APPLICATIONS, figures
    assert result["lost"] == 0, figures
    assert result["outcomes"] == {"DELIVERED": APPLICATIONS}, "every sample is one that ends delivered"
    for duplicate in ("more_than_one_terminal", "duplicate_events", "duplicate_lifecycle", "duplicate_deliveries",
                      "duplicate_counts"):
        assert result[duplicate] == 0, duplicate
    assert result["ratings_counted"] == result["ratings"] > 0
    assert result["crashes"] == 0, result["crash_list"]
    assert result["kills"] >= 3
    assert result["broker_restarts"] == 1
    assert result["store_outages"] == 1
    assert result["bad_inputs_handled"] == result["bad_inputs_tried"] > 0, result["bad_inputs_unhandled"]
    assert not any(result["lag"].values()), result["lag"]
