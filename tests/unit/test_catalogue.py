"""The catalogue file: what every entry carries, how a broken entry is reported (file, entry,
field), the portal search, bundles, and its publication as MatterChanged v2."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.routing import publishing
from services.routing.catalogue import (
    PLACE_KINDS,
    PLACES,
    RESULT_TYPES,
    Catalogue,
    InvalidMatter,
    Query,
)
from tongban import topics
from tongban.codec import SchemaRegistry

ROOT = Path(__file__).resolve().parents[2]
NATIONAL_LIST = "国办发\u30142020\u301535号"  # the State Council document of 2020, no. 35
CATALOGUE = Catalogue.load()
# codes the simulator, the demo and other tests use: they must keep working
CODES_IN_USE = ["KSTB-MKT-01", "KSTB-MKT-02", "KSTB-MKT-03", "KSTB-SOC-01", "KSTB-SOC-02", "KSTB-SOC-03",
                "KSTB-SOC-04", "KSTB-MED-01", "KSTB-CIV-01", "KSTB-PSB-01", "KSTB-HPF-01", "KSTB-JUS-01"]

VALID = """
[[matter]]
code = "T-1"
invented = true
name = "测试事项"
source = "测试清单"
department = "测试部门"
level = "COUNTY"
legal_basis = ["《测试条例》"]
subject = "PERSON"
modes = ["FULLY_ONLINE"]
place = "HOUSEHOLD"
acceptance_conditions = ["本人申请"]
promised_working_days = 1
statutory_working_days = 2
fee = "不收费"
result_type = "REGISTRATION"
postal_delivery = false
guide = "测试指南"
required_materials = [
  { code = "FORM", name = "申请书", essential = true },
  { code = "LICENCE", name = "营业执照", essential = false, commitment = true, shared_evidence = "E_LICENCE" },
]
"""


def load(tmp_path, text: str) -> Catalogue:
    path = tmp_path / "catalogue.toml"
    path.write_text(text)
    return Catalogue.load(path)


def broken(tmp_path, old: str, new: str) -> str:
    assert old in VALID
    with pytest.raises(ValueError, match=r"catalogue\.toml: ") as caught:
        load(tmp_path, VALID.replace(old, new, 1))
    return str(caught.value)


# ---------------------------------------------------------------- the shipped data

def test_the_catalogue_holds_thirty_real_matters_with_their_sources():
    matters = CATALOGUE.all()
    assert len(matters) >= 30
    for m in matters:
        assert all((m.source, m.legal_basis, m.department, m.guide)), m.code
        assert m.invented  # no national basic code is claimed
    from_the_national_list = [m for m in matters if NATIONAL_LIST in m.source]
    assert len(from_the_national_list) >= 30


def test_codes_in_use_elsewhere_are_still_in_the_catalogue():
    assert all(CATALOGUE.get(code) is not None for code in CODES_IN_USE)


def test_every_place_rule_and_result_type_occurs():
    places = {m.place for m in CATALOGUE.all()} | {m.leg_place(leg) for m in CATALOGUE.all() for leg in m.legs}
    assert places == set(PLACES)
    assert {m.result_type for m in CATALOGUE.all()} == set(RESULT_TYPES)


def test_materials_carry_their_flags():
    company = CATALOGUE.get("KSTB-MKT-01")
    premises = next(m for m in company.required_materials if m.code == "PREMISES_PROOF")
    assert (premises.essential, premises.commitment) == (True, True)
    pension = CATALOGUE.get("KSTB-SOC-01")
    certificate = next(m for m in pension.required_materials if m.code == "CONTRIBUTION_CERTIFICATE")
    assert (certificate.essential, certificate.shared_evidence) == (False, "DATA_CHECK")


def test_the_version_is_stable_and_follows_the_content(tmp_path):
    first = load(tmp_path, VALID).get("T-1")
    assert first.version == load(tmp_path, VALID).get("T-1").version
    changed = load(tmp_path, VALID.replace('fee = "不收费"', 'fee = "10元"')).get("T-1")
    assert changed.version != first.version


# ---------------------------------------------------------------- errors name file, entry, field

@pytest.mark.parametrize(("old", "new", "problem"), [
    ('legal_basis = ["《测试条例》"]\n', "", "legal_basis: missing"),
    ("promised_working_days = 1", 'promised_working_days = "1"', "promised_working_days: must be int, got str"),
    ("promised_working_days = 1", "promised_working_days = true", "promised_working_days: must be int, got bool"),
    ('place = "HOUSEHOLD"', 'place = "BIRTHPLACE"', "place: place must be one of"),
    ('level = "COUNTY"', 'level = "GALAXY"', "level: level must be one of"),
    ('result_type = "REGISTRATION"', 'result_type = "STAMP"', "result_type: result_type must be one of"),
    ("statutory_working_days = 2", "statutory_working_days = 0",
     "promised_working_days: need 0 <= promised_working_days <= statutory_working_days"),
    ('guide = "测试指南"', 'guide = ""', "guide: must not be empty"),
    ('legal_basis = ["《测试条例》"]', "legal_basis = []", "legal_basis: must not be empty"),
    ('modes = ["FULLY_ONLINE"]', 'modes = ["FULLY_ONLINE", 3]', "modes: must be a list of non-empty strings"),
    ('fee = "不收费"', 'fee = "不收费"\ncolour = "red"', "colour: unknown field"),
    ('{ code = "FORM", name = "申请书", essential = true }', '{ code = "FORM", name = "申请书" }',
     "required_materials[0].essential: missing"),
    ('shared_evidence = "E_LICENCE"', 'shared_evidence = "RUMOUR"', "required_materials: LICENCE: shared_evidence"),
    ('{ code = "FORM", name = "申请书", essential = true }', '{ code = "LICENCE", name = "申请书", essential = true }',
     "required_materials: material codes repeat"),
    ('modes = ["FULLY_ONLINE"]', 'modes = ["FULLY_ONLINE"]\nlegs = [{ step = "A", working_days = 1 }]',
     "legs: only JOINT matters have legs"),
])
def test_a_broken_entry_names_the_file_the_entry_and_the_field(tmp_path, old, new, problem):
    message = broken(tmp_path, old, new)
    assert message.startswith(f"{tmp_path / 'catalogue.toml'}: matter T-1: ")
    assert problem in message


def test_a_joint_leg_names_a_place_kind(tmp_path):
    message = broken(tmp_path, 'modes = ["FULLY_ONLINE"]',
                     'modes = ["JOINT"]\nlegs = [{ step = "A", working_days = 1, place = "MOON" }]')
    assert f"legs: A: place must be one of {PLACE_KINDS}" in message


def test_an_entry_without_a_code_is_named_by_its_position(tmp_path):
    message = broken(tmp_path, 'code = "T-1"\n', "")
    assert "matter #1: " in message
    assert "code: missing" in message


def test_every_missing_or_mistyped_field_of_an_entry_is_reported_at_once(tmp_path):
    message = broken(tmp_path, 'acceptance_conditions = ["本人申请"]\npromised_working_days = 1',
                     'promised_working_days = 1.5')
    assert "acceptance_conditions: missing" in message
    assert "promised_working_days: must be int, got float" in message


def test_a_repeated_code_is_refused_with_the_file(tmp_path):
    path = tmp_path / "catalogue.toml"
    with pytest.raises(ValueError, match=r"catalogue.toml: matter code T-1 appears twice$"):
        load(tmp_path, VALID + VALID)
    assert path.exists()


def test_a_bundle_names_catalogue_matters(tmp_path):
    with pytest.raises(ValueError, match=r"catalogue.toml: bundle B-1: matters must be two or more catalogue codes "
                                         r"\(unknown: T-9\)"):
        load(tmp_path, VALID + '\n[[bundle]]\ncode = "B-1"\nname = "一件事"\nmatters = ["T-1", "T-9"]\n')
    with pytest.raises(ValueError, match=r"bundle B-1: name: missing"):
        load(tmp_path, VALID + '\n[[bundle]]\ncode = "B-1"\nmatters = ["T-1"]\n')


def test_invalid_matter_keeps_its_problems_by_field(tmp_path):
    with pytest.raises(InvalidMatter) as caught:
        load(tmp_path, VALID.replace('place = "HOUSEHOLD"', 'place = "X"'))
    assert caught.value.entry == "T-1"
    assert [f for f, _ in caught.value.problems] == ["place"]


# ---------------------------------------------------------------- search and bundles

@pytest.mark.parametrize(("query", "expected"), [
    (Query(keyword="公积金"), {"KSTB-HPF-01", "KSTB-HPF-02", "KSTB-HPF-03", "KSTB-HPF-04", "KSTB-HPF-05",
                               "KSTB-HPF-06"}),
    (Query(mode="JOINT"), {"KSTB-SOC-01", "KSTB-SOC-05"}),
    (Query(keyword="婚姻"), {"KSTB-CIV-01", "KSTB-CIV-02"}),
    (Query(department="医疗保障", keyword="转移"), {"KSTB-MED-03"}),
    (Query(subject="COMPANY", department="市场监管"), {"KSTB-MKT-01", "KSTB-MKT-02", "KSTB-MKT-03"}),
    (Query(keyword="不存在的事项"), set()),
])
def test_search_filters_by_every_field_given(query, expected):
    assert {m.code for m in CATALOGUE.search(query)} == expected


def test_bundles_group_catalogue_matters():
    opening = CATALOGUE.bundle("BUNDLE-ENTERPRISE-OPENING")
    assert opening.matters == ("KSTB-MKT-01", "KSTB-HPF-06")
    assert all(CATALOGUE.get(code) for b in CATALOGUE.bundles() for code in b.matters)


# ---------------------------------------------------------------- publication (MatterChanged v2)

def published(catalogue: Catalogue) -> dict[str, dict]:
    """The topic after a first publication of `catalogue`: its latest body per code."""
    return {e.key: e.payload for e in publishing.changes(catalogue, {})}


def test_a_first_publication_adds_every_matter():
    emits = publishing.changes(CATALOGUE, {})
    assert sorted(e.key for e in emits) == sorted(m.code for m in CATALOGUE.all())
    assert {(e.topic, e.event_type, e.payload["change"]) for e in emits} == {
        (topics.CATALOGUE_CHANGES, topics.MATTER_CHANGED_EVENT, "ADDED")}


def test_only_what_changed_is_published_again(tmp_path):
    before = load(tmp_path, VALID)
    after = load(tmp_path, VALID.replace('fee = "不收费"', 'fee = "10元"'))
    assert publishing.changes(before, published(before)) == []
    [update] = publishing.changes(after, published(before))
    assert (update.key, update.payload["change"], update.payload["fee"]) == ("T-1", "UPDATED", "10元")


def test_a_matter_no_longer_listed_is_withdrawn_once_and_may_come_back(tmp_path):
    before = load(tmp_path, VALID)
    [withdrawn] = publishing.changes(Catalogue([]), published(before))
    assert (withdrawn.key, withdrawn.payload["change"], withdrawn.payload["name"]) == ("T-1", "WITHDRAWN", "测试事项")
    assert publishing.changes(Catalogue([]), {"T-1": withdrawn.payload}) == []
    [again] = publishing.changes(before, {"T-1": withdrawn.payload})
    assert again.payload["change"] == "ADDED"


def test_the_published_entry_carries_what_consumers_need_and_fits_the_schema():
    body = published(CATALOGUE)["KSTB-SOC-01"]
    assert body["place"] == "INSURED_AFTER"
    assert body["version"] == CATALOGUE.get("KSTB-SOC-01").version
    assert body["legs"][1] == {"step": "FUND_TRANSFER", "working_days": 15, "place": "INSURED_BEFORE"}
    assert {"code": "CONTRIBUTION_CERTIFICATE", "name": "参保缴费凭证", "essential": False, "commitment": False,
            "shared_evidence": "DATA_CHECK"} in body["materials"]
    registry = SchemaRegistry.load()
    assert registry.latest(topics.MATTER_CHANGED_EVENT).version == 2
    envelope = {"event_id": "e1", "event_type": topics.MATTER_CHANGED_EVENT, "schema_version": 2,
                "occurred_at": datetime(2026, 12, 4, tzinfo=UTC), "source_system": "tongban-routing",
                "source_partner": None, "correlation_id": "KSTB-SOC-01", "causation_id": None}
    record = {"envelope": envelope, **body}
    assert registry.decode(registry.encode(topics.MATTER_CHANGED_EVENT, record))[1] == record
