"""What `make demo` prints, over the real broker: the demo's own report (devtools.demo) for one
sample of each mode of handling. A joint matter's legs are printed as they run, in order and
before its delivery; the summary labels every mode; the SLA table at the end names the
receiving window and the deciding authority with their clocks. Checked against what routing
published (ApplicationRouted), read apart by the test's own consumer."""

import itertools
import re
import secrets
from datetime import date

import pytest

from devtools import demo
from services.intake import intake_pb2_grpc
from sim.samples import JOINT_MATTER, samples
from tests.support import Sink
from tongban import topics
from tongban.grpc_tls import DEFAULT_CALLER, client_channel
from tongban.workdays import WorkingCalendar

pytestmark = pytest.mark.integration

ONLINE, WINDOW = "KSTB-MED-01", "KSTB-MKT-01"  # 跨省异地就医备案 online; 公司设立登记 at a Changsha window
LEG_STATES = ["WAITING", "ASSIGNED", "COMPLETED"]


def lines_of(out: str, application_id: str) -> list[str]:
    """The timestamped lines the demo printed while it followed one application."""
    return [line.split(f"{application_id}  ", 1)[1] for line in out.splitlines()
            if line.startswith("[") and f"] {application_id}  " in line]


def ledger_rows(out: str, application_id: str) -> dict[str, list[str]]:
    """The SLA table of one application: clock name -> its row's columns."""
    table = out.split("SLA ledger (routing)", 1)[1].split(f"\n{application_id}  ", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in table.splitlines()[2:]]  # after the heading and the column names
    return {row[1]: row for row in rows}


async def test_the_demo_shows_a_joint_matters_legs_each_mode_and_each_partys_clock(stack, namespace, capsys):
    chosen = [s for s in samples(f"demo-{secrets.token_hex(4)}") if s.request.matter_code in (ONLINE, WINDOW,
                                                                                           JOINT_MATTER)]
    async with client_channel(stack.grpc_target("intake"), DEFAULT_CALLER) as channel:
        ok = await demo.report(intake_pb2_grpc.IntakeStub(channel), chosen, namespace)
    out = capsys.readouterr().out
    print(out)  # shown when the test fails
    assert ok, out
    ids = {s.request.matter_code: re.search(rf"\] (\S+)  submitted: {re.escape(s.title)}", out).group(1)
           for s in chosen}
    async with Sink(namespace, [topics.APPLICATION_ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: all(s.events(topics.APPLICATION_ROUTED_EVENT, a) for a in ids.values()))
    routed = {code: seen.events(topics.APPLICATION_ROUTED_EVENT, a)[0] for code, a in ids.items()}
    assert [routed[code]["mode"] for code in (ONLINE, WINDOW, JOINT_MATTER)] == [
        "FULLY_ONLINE", "RECEIVE_HERE_HANDLE_THERE", "JOINT"]

    # the joint matter: every leg completed in order, by the party routing named, before DELIVERED
    joint = lines_of(out, ids[JOINT_MATTER])
    legs = [(leg["step"], leg["partner_id"]) for leg in routed[JOINT_MATTER]["legs"]]
    completed = [line for line in joint if line.startswith("LEG_COMPLETED")]
    assert completed == [f"LEG_COMPLETED (leg {n} of 3 ({step})) by {party}"
                         for n, (step, party) in enumerate(legs, start=1)], joint
    stages = [line.split()[0] for line in joint]
    assert stages.index("DELIVERED") > max(i for i, stage in enumerate(stages) if stage == "LEG_COMPLETED")
    # Track's legs each time the demo saw them change (the simulated authorities answer at
    # once, so often only the last): a leg's state only moves forward, and all end COMPLETED
    snapshots = [line.removeprefix("legs").strip().split(" | ") for line in joint if line.startswith("legs ")]
    states = [[LEG_STATES.index(leg.split()[3]) for leg in snapshot] for snapshot in snapshots]
    assert all(all(a <= b for a, b in zip(x, y, strict=True)) for x, y in itertools.pairwise(states)), snapshots
    assert snapshots[-1] == [f"{n} {step} {party} COMPLETED" for n, (step, party) in enumerate(legs, start=1)]

    # every mode labelled, once each
    assert "modes of handling: 全程网办 (FULLY_ONLINE) 1, 异地代收代办 (RECEIVE_HERE_HANDLE_THERE) 1, " \
           "多地联办 (JOINT) 1" in out

    # the SLA table: the window that received and the authority that decided, each with its clock
    calendar = WorkingCalendar.load()
    window_sample = next(s for s in chosen if s.request.matter_code == WINDOW)
    rows = ledger_rows(out, ids[WINDOW])
    receipt, acceptance, decision = rows["RECEIPT"], rows["ACCEPTANCE"], rows["DECISION:DECIDE"]
    assert receipt[2:5] == [window_sample.request.window_id, "receiving", "window"]
    assert acceptance[2:5] == [routed[WINDOW]["deciding_partner"], "deciding", "authority"]
    assert (decision[2], int(decision[5])) == (routed[WINDOW]["deciding_partner"],
                                               routed[WINDOW]["legs"][0]["working_days"])
    # each deadline is its limit in working days from the day counting started (the table's
    # last five columns: limit, from, deadline, ended, status)
    joint_rows = ledger_rows(out, ids[JOINT_MATTER])
    for row in (acceptance, rows["DELIVERY"], *(joint_rows[f"DECISION:{step}"] for step, _ in legs)):
        limit, start, deadline, ended = int(row[-5]), *map(date.fromisoformat, row[-4:-1])
        assert calendar.working_days_between(start, deadline) == limit
        assert ended <= deadline
        assert row[-1] == "DONE"
    assert rows["TRANSIT"][2] == window_sample.request.window_id  # the originals posted by the window
    assert [(joint_rows[f"DECISION:{step}"][2], joint_rows[f"DECISION:{step}"][3:7]) for step, _ in legs] == [
        (party, ["leg", str(n), "of", "3"]) for n, (_, party) in enumerate(legs, start=1)]
    joint_sample = next(s for s in chosen if s.request.matter_code == JOINT_MATTER)
    assert joint_rows["RECEIPT"][2] == joint_sample.request.receiving_division  # online: the receiving division
