"""The sharing catalogue and demand list: checked at load, and what a query may be answered
with (tongban.sharing.governance); a provider's yes/no from its records (services.datasharing.records)."""

from datetime import date
from pathlib import Path

import pytest

from services.datasharing import records
from tongban.sharing import governance
from tongban.sharing.governance import InvalidList, Query, Ruling, rule

CATALOGUE = governance.load_catalogue()
DEMANDS = governance.load_demands(CATALOGUE)
TODAY = date(2026, 12, 1)
HOUSEHOLD_BASIS = "《中华人民共和国户口登记条例》第十条"
EDUCATION_BASIS = "《公证程序规则》第二十七条"


def query(requester="tongban-verification", matter="KSTB-PSB-01", evidence="HOUSEHOLD", basis=HOUSEHOLD_BASIS,
          want=False, purpose="受理核验") -> Query:
    return Query(requester, matter, evidence, purpose, basis, want)


@pytest.mark.parametrize(("q", "expected"), [
    (query(), Ruling(True, False, "approved demand")),
    (query(matter="KSTB-SOC-02"),
     Ruling(False, False, "no approved demand of tongban-verification for HOUSEHOLD in matter KSTB-SOC-02")),
    (query(requester="tongban-delivery", evidence="IDENTITY", matter="KSTB-SOC-02", basis="x"),
     Ruling(False, False, "no approved demand of tongban-delivery for IDENTITY in matter KSTB-SOC-02")),  # PENDING
    (query(requester="someone-else"),
     Ruling(False, False, "no approved demand of someone-else for HOUSEHOLD in matter KSTB-PSB-01")),
    (query(basis="another rule"), Ruling(False, False, "HOUSEHOLD is shared on condition: the query must name the "
                                                       "legal basis its demand was approved under")),
    (query(purpose=" "), Ruling(False, False, "a query names its purpose and legal basis")),
    (query(evidence="PROPERTY"), Ruling(False, False, "evidence PROPERTY is not shared")),
    (query(matter="KSTB-JUS-01", evidence="EDUCATION", basis=EDUCATION_BASIS, want=True),
     Ruling(True, True, "approved demand")),  # a broad requester whose demand allows the evidence
    (query(matter="KSTB-JUS-01", evidence="EDUCATION", basis=EDUCATION_BASIS, want=False),
     Ruling(True, False, "approved demand")),  # not asked for: yes/no
    (query(requester="hunan-notary", matter="KSTB-JUS-01", evidence="EDUCATION", basis=EDUCATION_BASIS, want=True),
     Ruling(True, False, "approved demand")),  # narrow: only ever yes/no
    (query(evidence="IDENTITY", want=True, basis="any"), Ruling(True, False, "approved demand")),  # VERIFY demand
])
def test_a_query_is_answered_only_as_its_approved_demand_allows(q, expected):
    assert rule(CATALOGUE, DEMANDS, q, TODAY) == expected


def test_a_demand_approved_later_does_not_count_yet():
    assert not rule(CATALOGUE, DEMANDS, query(), date(2026, 8, 31)).allowed


def test_every_shared_material_maps_to_one_evidence_for_its_kind_of_applicant():
    assert CATALOGUE.for_material("RESIDENT_ID", "PERSON").type == "IDENTITY"
    assert CATALOGUE.for_material("RESIDENT_ID", "COMPANY") is None  # the person is not the applicant
    assert CATALOGUE.for_material("BUSINESS_LICENCE", "COMPANY").type == "ENTERPRISE"
    assert CATALOGUE.for_material("PREMISES_PROOF", "COMPANY") is None  # not shared: originals
    assert CATALOGUE.serving_providers() == ["hn_psb", "mps", "samr", "moe", "mohrss"]
    assert {p.level for p in CATALOGUE.providers.values()} == {"NATIONAL", "PROVINCIAL"}


CATALOGUE_ENTRY = """
[provider.p]
name = "p"
level = "NATIONAL"
correction_working_days = 5
[[evidence]]
type = "X"
provider = "{provider}"
class = "{cls}"
response_seconds = {seconds}
materials = ["M"]
declared = ["name"]
licence = false
subject = "{subject}"
"""


@pytest.mark.parametrize(("changes", "problem"), [
    ({"provider": "nobody"}, "provider nobody is not declared"),
    ({"cls": "SOMETIMES"}, "class must be one of UNCONDITIONAL, CONDITIONAL, NOT_SHARED"),
    ({"seconds": "0"}, "response_seconds must be in (0, 60]"),
    ({"subject": "ROBOT"}, "subject must be one of PERSON, COMPANY"),
])
def test_a_wrong_catalogue_entry_stops_the_load(tmp_path: Path, changes, problem):
    values = {"provider": "p", "cls": "UNCONDITIONAL", "seconds": "2", "subject": "PERSON", **changes}
    path = tmp_path / "catalogue.toml"
    path.write_text(CATALOGUE_ENTRY.format(**values))
    with pytest.raises(InvalidList, match=problem.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        governance.load_catalogue(path)


DEMAND = """
[requester.r]
class = "{rclass}"
[[demand]]
requester = "r"
evidence = "{evidence}"
matters = ["KSTB-PSB-01"]
legal_basis = "basis"
answer = "{answer}"
status = "{status}"
{approved}
"""


@pytest.mark.parametrize(("changes", "problem"), [
    ({"rclass": "NARROW", "answer": "EVIDENCE"}, "a NARROW requester is only ever answered yes/no"),
    ({"evidence": "PROPERTY"}, "evidence PROPERTY is not shared"),
    ({"evidence": "DNA"}, "evidence DNA is not in the sharing catalogue"),
    ({"approved": ""}, "an APPROVED demand needs its approved_on date"),
    ({"status": "MAYBE"}, "status must be one of APPROVED, PENDING, REVOKED"),
])
def test_a_wrong_demand_stops_the_load(tmp_path: Path, changes, problem):
    values = {"rclass": "BROAD", "evidence": "HOUSEHOLD", "answer": "VERIFY", "status": "APPROVED",
              "approved": "approved_on = 2026-09-01", **changes}
    path = tmp_path / "demands.toml"
    path.write_text(DEMAND.format(**values))
    with pytest.raises(InvalidList, match=problem):
        governance.load_demands(CATALOGUE, path)


STORE = records.RecordStore([records.Record("HOUSEHOLD", "S1", {"name": "甲", "household_division": "430102"})])


@pytest.mark.parametrize(("subject", "declared", "expected"), [
    ("S1", {"name": "甲", "household_division": "430102"}, ("MATCH", ())),
    ("S1", {"name": "甲", "household_division": "440300"}, ("NO_MATCH", ("household_division",))),
    ("S1", {"name": "乙", "household_division": "440300"}, ("NO_MATCH", ("name", "household_division"))),
    ("S1", {"name": "甲", "status": "ignored: not compared"}, ("MATCH", ())),
    ("S2", {"name": "甲"}, ("NOT_FOUND", ())),
])
def test_a_provider_answers_yes_or_no_on_what_was_declared(subject, declared, expected):
    verdict = records.verify(STORE, "HOUSEHOLD", subject, declared, ("name", "household_division"))
    assert (verdict.verdict, verdict.mismatched) == expected


def test_every_seeded_store_loads_and_holds_only_evidence_its_provider_shares():
    for provider in CATALOGUE.serving_providers():
        shared = {e.type for e in CATALOGUE.served_by(provider)}
        store = records.RecordStore.load(provider)
        assert store.evidence_types() <= shared, provider
