"""异地视频会商收件 in intake, through its rules and handlers: a consultation is asked for and
recorded once, as events on tongban.consultation.recorded; the application it names shows both
steps in its timeline. No broker."""

from datetime import UTC, datetime, timedelta

import pytest

from services.intake import consultation, domain, handlers
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.events import encode_event
from tongban.handling import Event, Outcome, Rejected

APP = "TB0123456789ABCDEF0123"
T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
FORM = domain.MatterForm(subject="PERSON", modes=("WINDOW",), essential=frozenset({"RESIDENT_ID", "PHOTO"}),
                         optional=frozenset({"HOUSEHOLD_REGISTER"}))


class Catalogue:
    def matter(self, code: str) -> domain.MatterForm | None:
        return FORM if code == "KSTB-SOC-02" else None


CID = consultation.consultation_id_for("changsha-window", APP, "KSTB-SOC-02", "HN-430104-KSTB-01", "360000",
                                       ["RESIDENT_ID", "PHOTO"])
REQUEST = {"consultation_id": CID, "application_id": APP, "pre_application_reference": None,
           "matter_code": "KSTB-SOC-02", "window_id": "HN-430104-KSTB-01", "deciding_partner": "360000",
           "proposed_materials": ["RESIDENT_ID", "PHOTO"], "reason": "申请人电话13812345678，材料存疑",
           "requested_by": "changsha-window", "requested_at": T0}


def recording(outcome: str = consultation.AGREED, agreed: tuple[str, ...] = ("RESIDENT_ID",), note: str = "") -> dict:
    return {"outcome": outcome, "agreed_materials": list(agreed), "held_at": T0 + timedelta(minutes=30),
            "note": note, "recorded_at": T0 + timedelta(hours=1)}


def command(command_type: str, payload: dict, n: int = 0) -> Event:
    return Event(f"cmd-{command_type}-{n}", command_type, CID, payload, {"occurred_at": T0, "correlation_id": CID},
                 topics.commands("tongban-intake"))


async def feed(*steps: tuple[str, dict]) -> tuple[dict | None, list[Outcome]]:
    """The consultation's commands in order, each on the state the previous one left."""
    state, outcomes = None, []
    for n, (command_type, payload) in enumerate(steps):
        outcome = await handlers.COMMANDS[command_type](command(command_type, payload, n), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def check(**changes) -> None:
    given = {"application_id": APP, "reference": "", "matter_code": "KSTB-SOC-02", "window_id": "HN-430104-KSTB-01",
             "deciding_partner": "360000", "checklist": ("RESIDENT_ID",), "reason": "", "catalogue": Catalogue()}
    consultation.check_request(**{**given, **changes})


# ---------------------------------------------------------------------------- rules


def test_the_id_follows_from_the_request_and_another_checklist_is_another_consultation():
    again = consultation.consultation_id_for("changsha-window", APP, "KSTB-SOC-02", "HN-430104-KSTB-01", "360000",
                                             ["PHOTO", "RESIDENT_ID"])
    other = consultation.consultation_id_for("changsha-window", APP, "KSTB-SOC-02", "HN-430104-KSTB-01", "360000",
                                             ["PHOTO"])
    assert again == CID != other
    assert consultation.is_consultation_id(CID)
    assert not consultation.is_consultation_id(APP)


def test_a_checklist_names_only_materials_of_the_matter():
    check(checklist=("RESIDENT_ID", "HOUSEHOLD_REGISTER"))
    with pytest.raises(domain.InvalidSubmission) as refused:
        check(checklist=("RESIDENT_ID", "DIPLOMA"))
    assert refused.value.problems == ["proposed_materials: not materials of matter KSTB-SOC-02: DIPLOMA"]


def test_a_request_names_the_application_or_a_reference_a_window_an_authority_and_a_checklist():
    with pytest.raises(domain.InvalidSubmission) as refused:
        check(application_id="", reference="", window_id="", deciding_partner="", checklist=())
    assert [domain.field_of(p) for p in refused.value.problems] == [
        "application_id", "window_id", "deciding_partner", "proposed_materials"]
    with pytest.raises(domain.InvalidSubmission):
        check(reference="PRE-1")  # both
    check(application_id="", reference="PRE-1")


@pytest.mark.parametrize(("outcome", "agreed", "held", "problem"), [
    ("AGREED", (), True, "agreed_materials: an agreed consultation names the agreed checklist"),
    ("NOT_HELD", ("PHOTO",), False, "agreed_materials: a consultation that was not held agreed nothing"),
    ("NOT_HELD", (), True, "held_at: a consultation that was not held has no time"),
    ("NOT_AGREED", (), False, "held_at is required for a consultation that was held"),
    ("agreed", ("PHOTO",), True, "outcome: one of AGREED, NOT_AGREED, NOT_HELD"),
    ("AGREED", ("DIPLOMA",), True, "agreed_materials: not materials of matter KSTB-SOC-02: DIPLOMA"),
])
def test_an_outcome_is_refused_with_the_reason(outcome, agreed, held, problem):
    held_at = T0 + timedelta(minutes=5) if held else None
    with pytest.raises(domain.InvalidSubmission) as refused:
        consultation.check_record(REQUEST, outcome, agreed, held_at, "", T0 + timedelta(hours=1), Catalogue())
    assert refused.value.problems == [problem]


def test_a_consultation_is_not_held_before_it_was_asked_for_nor_in_the_future():
    for held_at in (T0 - timedelta(hours=1), T0 + timedelta(hours=2)):
        with pytest.raises(domain.InvalidSubmission):
            consultation.check_record(REQUEST, "AGREED", ("PHOTO",), held_at, "", T0 + timedelta(hours=1), None)


# ---------------------------------------------------------------------------- handlers


async def test_a_request_and_its_outcome_are_events_with_the_checklist_and_nothing_personal():
    state, (asked, recorded) = await feed((handlers.REQUEST_CONSULTATION, REQUEST),
                                          (handlers.RECORD_CONSULTATION, recording(note="回电 13812345678")))
    [requested] = asked.emits
    assert (requested.topic, requested.event_type, requested.key) == (
        topics.CONSULTATIONS, topics.CONSULTATION_REQUESTED_EVENT, CID)
    assert requested.payload["proposed_materials"] == ["RESIDENT_ID", "PHOTO"]
    assert "13812345678" not in requested.payload["reason"]
    [outcome] = recorded.emits
    assert (outcome.event_type, outcome.payload["outcome"], outcome.payload["agreed_materials"]) == (
        topics.CONSULTATION_RECORDED_EVENT, "AGREED", ["RESIDENT_ID"])
    assert "13812345678" not in outcome.payload["note"]
    assert recorded.finished
    assert state is not None
    assert (state["outcome"], state["application_id"]) == ("AGREED", APP)
    registry = SchemaRegistry.load()  # what the handlers emit is what the released schemas take
    for emitted in (requested, outcome):
        encode_event(registry, emitted.event_type, emitted.payload, cause_id="c", correlation_id=CID,
                     source_system="intake")


async def test_a_retried_request_or_outcome_changes_nothing():
    _, outcomes = await feed((handlers.REQUEST_CONSULTATION, REQUEST), (handlers.REQUEST_CONSULTATION, REQUEST),
                             (handlers.RECORD_CONSULTATION, recording()), (handlers.RECORD_CONSULTATION, recording()))
    assert [len(o.emits) for o in outcomes] == [1, 0, 1, 0]


async def test_a_second_different_outcome_and_an_outcome_without_a_request_are_refused():
    with pytest.raises(Rejected, match="already recorded as AGREED"):
        await feed((handlers.REQUEST_CONSULTATION, REQUEST), (handlers.RECORD_CONSULTATION, recording()),
                   (handlers.RECORD_CONSULTATION, recording(consultation.NOT_AGREED, ())))
    with pytest.raises(Rejected, match="no such consultation"):
        await feed((handlers.RECORD_CONSULTATION, recording()))


async def test_the_application_shows_both_steps_and_its_stage_stays():
    _, (asked, recorded) = await feed((handlers.REQUEST_CONSULTATION, REQUEST),
                                      (handlers.RECORD_CONSULTATION, recording()))
    view = domain.advance(None, APP, "SUPPLEMENT_REQUESTED", T0 - timedelta(days=1))
    for minutes, emitted in enumerate((*asked.emits, *recorded.emits), start=1):
        event = Event(f"ev-{minutes}", emitted.event_type, CID, emitted.payload,
                      {"occurred_at": T0 + timedelta(minutes=minutes), "correlation_id": CID}, topics.CONSULTATIONS)
        assert handlers.KEYS[emitted.event_type](event) == APP  # re-keyed to the application
        outcome = await handlers.HANDLERS[emitted.event_type](event, view)
        assert outcome.state is not None
        assert outcome.emits == []
        view = outcome.state
    assert view["stage"] == "SUPPLEMENT_REQUESTED"
    assert [(h["stage"], h["detail"]) for h in domain.timeline(view)][1:] == [
        ("CONSULTATION_REQUESTED", "360000: RESIDENT_ID, PHOTO"), ("CONSULTATION_RECORDED", "AGREED: RESIDENT_ID")]


async def test_a_consultation_before_the_application_stays_with_the_consultation():
    before = {**REQUEST, "application_id": None, "pre_application_reference": "PRE-1"}
    event = Event("ev", topics.CONSULTATION_REQUESTED_EVENT, CID, before, {"occurred_at": T0}, topics.CONSULTATIONS)
    assert handlers.KEYS[event.event_type](event) == CID
    assert await handlers.HANDLERS[event.event_type](event, consultation.new_consultation(before)) == Outcome()


def test_intake_reads_its_consultations_topic():
    assert topics.CONSULTATIONS in handlers.INPUTS
