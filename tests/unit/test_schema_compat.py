"""FULL_TRANSITIVE compatibility (avro's checker) and released-schema immutability."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from tongban.codec import SchemaRegistry
from tongban.schema_compat import (
    LOCK_NAME,
    check_directory,
    check_full_transitive,
    check_pair,
    lock_entries,
    lock_problems,
    main,
    read_lock,
    update_lock,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "evolution"


def family(directory: Path) -> list[str]:
    return [sv.schema_json for sv in SchemaRegistry.load(directory).all_versions()]


# -- the released schemas ----------------------------------------------------------------


def test_every_released_family_is_full_transitive():
    assert check_directory() == []


@pytest.mark.parametrize("sv", SchemaRegistry.load().all_versions(), ids=lambda sv: f"{sv.full_name}.v{sv.version}")
def test_avro_parses_our_schemas_without_warnings_and_each_reads_itself(sv):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. avro warns and drops unknown logical types
        assert check_pair(sv.schema_json, sv.schema_json) == []


def test_all_pairs_of_all_families_both_ways():
    """Every pair of versions of every family, schemas/ plus the fixtures, read both ways."""
    directories = [("schemas", SCHEMAS), *((d.name, d) for d in sorted(FIXTURES.iterdir()))]
    expected_bad = {"incompatible", "logical", "transitive"}
    pairs = 0
    for label, directory in directories:
        registry = SchemaRegistry.load(directory)
        for name in {sv.full_name for sv in registry.all_versions()}:
            versions = [sv.schema_json for sv in registry.versions(name)]
            problems = check_full_transitive(versions)
            if label != "schemas":  # the released families grow; the fixtures are fixed
                pairs += len(versions) * (len(versions) - 1)
            assert bool(problems) == (label in expected_bad), (label, name, problems)
    assert pairs == 2 + 2 + 2 + 6  # compatible, incompatible, logical (2 versions), transitive (3)


# -- the fixtures ------------------------------------------------------------------------


def test_adding_fields_with_defaults_is_compatible():
    assert check_full_transitive(family(FIXTURES / "compatible")) == []


def test_incompatible_fixture_is_reported_both_ways():
    problems = check_full_transitive(family(FIXTURES / "incompatible"))
    assert len(problems) == 2
    new_reads_old, old_reads_new = problems
    assert new_reads_old.startswith("v2 reading v1: reader_field_missing_default_value")
    assert new_reads_old.endswith(": priority")
    assert old_reads_new.startswith("v1 reading v2: reader_field_missing_default_value")
    assert old_reads_new.endswith(": label")


def test_logical_type_change_is_reported_although_avro_ignores_it():
    problems = check_full_transitive(family(FIXTURES / "logical"))
    assert problems == [
        "v2 reading v1: logical type of sent_at differs: reader timestamp-micros, writer timestamp-millis",
        "v1 reading v2: logical type of sent_at differs: reader timestamp-millis, writer timestamp-micros",
    ]


def test_transitive_break_between_non_adjacent_versions():
    v1, v2, v3 = family(FIXTURES / "transitive")
    assert check_full_transitive([v1, v2]) == []
    assert check_full_transitive([v2, v3]) == []
    assert check_full_transitive([v1, v2, v3]) == [
        "v1 reading v3: reader_field_missing_default_value at /fields/1: weight_grams"]


def test_type_change_and_rename_are_reported():
    base = {"type": "record", "name": "R", "namespace": "t", "fields": [{"name": "a", "type": "string"}]}
    as_int = {**base, "fields": [{"name": "a", "type": "int"}]}
    renamed = {**base, "name": "S"}
    assert "type_mismatch" in check_pair(json.dumps(as_int), json.dumps(base))[0]
    assert "name_mismatch" in check_pair(json.dumps(renamed), json.dumps(base))[0]
    assert check_pair(json.dumps(base), json.dumps(as_int)) != []  # string does not read int either


def test_unparseable_schema_is_a_problem_not_an_exception():
    assert check_pair("{", '"string"')[0].startswith("reader schema does not parse")
    assert check_pair('"string"', '{"type": "nope"}')[0].startswith("writer schema does not parse")


def test_cli(capsys):
    assert main([]) == 0
    assert main(["--schemas", str(FIXTURES / "compatible")]) == 0
    assert main(["--schemas", str(FIXTURES / "incompatible")]) == 1
    err = capsys.readouterr().err
    assert "tongban.fixture.Parcel v2 reading v1" in err
    assert "2 compatibility problem(s)" in err


def test_cli_load_error(tmp_path, capsys):
    (tmp_path / "bad.avsc").write_text("{}")
    assert main(["--schemas", str(tmp_path)]) == 2


# -- released.lock -----------------------------------------------------------------------


def test_released_schemas_match_the_lock():
    assert lock_problems() == []


def test_lock_lists_every_schema_file():
    assert set(read_lock(SCHEMAS / LOCK_NAME)) == {p.name for p in SCHEMAS.glob("*.avsc")}


@pytest.fixture
def schemas_copy(tmp_path) -> Path:
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, directory)
    return directory


def _edit(path: Path, change) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    change(schema)
    path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def test_changing_a_released_type_changes_its_fingerprint(schemas_copy):
    _edit(schemas_copy / "tongban.application.ApplicationUnroutable.v1.avsc",
          lambda s: s["fields"].append({"name": "extra", "type": ["null", "string"], "default": None}))
    problems = lock_problems(schemas_copy)
    assert len(problems) == 1
    assert "ApplicationUnroutable.v1.avsc: fingerprint changed" in problems[0]
    with pytest.raises(ValueError, match="released files changed"):
        update_lock(schemas_copy)


def test_dropping_a_pii_mark_is_caught_although_the_fingerprint_is_unchanged(schemas_copy):
    path = schemas_copy / "tongban.delivery.PostalDispatch.v1.avsc"
    _edit(path, lambda s: s["fields"][3].pop("pii"))
    assert lock_problems(schemas_copy) == [
        "tongban.delivery.PostalDispatch.v1.avsc: file content changed (docs or pii marks?); "
        "released versions are immutable"]


def test_changing_a_component_changes_every_event_using_it(schemas_copy):
    _edit(schemas_copy / "tongban.application.Applicant.v1.avsc",
          lambda s: s["fields"].append({"name": "extra", "type": ["null", "string"], "default": None}))
    changed = {p.split(":")[0] for p in lock_problems(schemas_copy)}
    assert changed == {"tongban.application.Applicant.v1.avsc",
                       "tongban.application.ApplicationReceived.v1.avsc",
                       "tongban.application.ApplicationReceived.v2.avsc",
                       "tongban.partner.MatterAssigned.v1.avsc",
                       "tongban.partner.MatterAssigned.v2.avsc",
                       "tongban.partner.PartnerSubmission.v1.avsc"}


def test_new_version_must_be_locked_and_update_lock_appends(schemas_copy):
    source = schemas_copy / "tongban.application.ApplicationUnroutable.v1.avsc"
    target = schemas_copy / "tongban.application.ApplicationUnroutable.v2.avsc"
    shutil.copy(source, target)
    _edit(target, lambda s: s["fields"].append({"name": "hint", "type": ["null", "string"], "default": None}))
    before = (schemas_copy / LOCK_NAME).read_text(encoding="utf-8")
    assert lock_problems(schemas_copy) == [
        "tongban.application.ApplicationUnroutable.v2.avsc: not in released.lock; "
        "run python -m tongban.schema_compat --update-lock when releasing it"]
    assert main(["--schemas", str(schemas_copy), "--update-lock"]) == 0
    after = (schemas_copy / LOCK_NAME).read_text(encoding="utf-8")
    assert after.startswith(before)
    assert after.count("\n") == before.count("\n") + 1
    assert lock_problems(schemas_copy) == []
    assert update_lock(schemas_copy) == []
    assert lock_entries(schemas_copy)[target.name] == read_lock(schemas_copy / LOCK_NAME)[target.name]


def test_deleting_a_released_file_is_caught(schemas_copy):
    (schemas_copy / "tongban.runtime.TimerFired.v1.avsc").unlink()
    assert lock_problems(schemas_copy) == ["tongban.runtime.TimerFired.v1.avsc: released file is missing"]
