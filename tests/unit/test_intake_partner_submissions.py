"""Partners' submissions through intake's partner feed and handlers, with the runtime
stand-in that applies commands at once: a valid one is recorded, numbered and answered with
its number on the partner's acknowledgements topic; an invalid one is refused there with
every problem, naming fields, never values; a resend is a duplicate and another payload
under the same id is refused. No broker."""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from test_intake_api import Catalogue
from test_intake_api_auth import InstantRuntime

from services.intake import domain, handlers
from services.intake.partner_feed import UNREADABLE, PartnerFeed, reader_settings, submitters
from tests.pii_parties import cipher, seal
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.config import load_settings
from tongban.events import encode_event

PARTNER = "420000"
T0 = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
NAME, ID_NUMBER, PHONE = "示例公司", "91430100MA4L00000F", "13800000000"
REGISTRY = SchemaRegistry.load()
ACKS = topics.partner_acknowledgements(PARTNER)


def sealed(value: str | None, path: str, subject: str, party: str = PARTNER) -> str | None:
    return None if value is None else seal(value, topics.PARTNER_SUBMISSION_EVENT, path, subject, (party,))


def submission(submission_id: str = "HB-0001", party: str = PARTNER, **changes) -> tuple[dict, dict]:
    """(envelope, body) of a PartnerSubmission as the partner writes it: 公司设立登记 received at
    a Hubei window for a Changsha company, sealed by the partner for itself."""
    applicant = {"kind": "COMPANY", "name": NAME, "id_number": ID_NUMBER, "phone": PHONE,
                 **changes.pop("applicant", {})}
    body = {"submission_id": submission_id, "matter_code": "KSTB-MKT-01", "receiving_division": "420106",
            "home_division": "430103",
            "applicant": {k: v if k == "kind" else sealed(v, f"applicant.{k}", submission_id, party)
                          for k, v in applicant.items()},
            "materials": [{"code": "APPLICATION_FORM", "name": "申请书", "provided": True, "original_checked": True},
                          {"code": "ARTICLES", "name": "公司章程", "provided": True, "original_checked": True}],
            "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": T0, "window_id": "",
            "commitments": [], "deferred_materials": {}, **changes}
    return {"event_id": f"ev-{secrets.token_hex(4)}", "correlation_id": submission_id}, body


def feed_of(runtime: InstantRuntime) -> PartnerFeed:
    return PartnerFeed(runtime, REGISTRY, {PARTNER: cipher(PARTNER)}, Catalogue())


def answers(runtime: InstantRuntime) -> list[tuple[str, dict]]:
    return [(e.event_type, e.payload) for e in runtime.published if e.topic == ACKS]


async def test_a_valid_submission_becomes_a_numbered_application_and_the_partner_learns_its_number():
    runtime = InstantRuntime()
    await feed_of(runtime).handle(PARTNER, *submission())
    application_id = domain.application_id_for("partner-420000", "HB-0001")
    [received] = [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    assert (received.key, received.payload["channel"], received.payload["applicant"]["name"]) == (
        application_id, "PARTNER", NAME), "opened: the runtime seals it again for verification and delivery"
    [(kind, answer)] = answers(runtime)
    assert kind == topics.SUBMISSION_RECEIVED_EVENT
    assert answer["application_number"] == received.payload["application_number"]
    assert (answer["submission_id"], answer["application_id"]) == ("HB-0001", application_id)
    view = runtime.states[application_id]
    assert (view["source_system"], view["source_role"]) == ("partner-420000", "partner")
    assert domain.may_see(view, "partner-420000", "partner")


async def test_an_invalid_submission_is_refused_to_the_partner_with_every_problem_and_no_value():
    runtime = InstantRuntime()
    await feed_of(runtime).handle(PARTNER, *submission(applicant={"id_number": "91430100MA4L00000X"},
                                                       home_division="999999", delivery_method="POST"))
    [(kind, answer)] = answers(runtime)
    assert kind == topics.SUBMISSION_REFUSED_EVENT
    assert [domain.field_of(p) for p in answer["problems"]] == ["home_division", "applicant.id_number",
                                                                "postal_address"]
    assert "91430100MA4L00000X" not in str(answer)
    assert not [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    assert runtime.states == {}, "nothing is recorded"


async def test_a_resend_is_a_duplicate_and_another_payload_under_the_same_id_is_refused():
    runtime = InstantRuntime()
    partner_feed = feed_of(runtime)
    await partner_feed.handle(PARTNER, *submission())
    envelope, body = submission()
    await partner_feed.handle(PARTNER, envelope, body)  # a new record, same payload
    await partner_feed.handle(PARTNER, *submission(applicant={"phone": "13900000000"}))
    received = [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    assert len(received) == 1, "numbered once"
    assert [kind for kind, _ in answers(runtime)] == [topics.SUBMISSION_RECEIVED_EVENT,
                                                      topics.SUBMISSION_REFUSED_EVENT]
    [problem] = answers(runtime)[1][1]["problems"]
    assert problem == "submission_id was used for another submission; it differs in: applicant.phone"


async def test_personal_data_sealed_for_another_party_is_refused_as_unreadable():
    runtime = InstantRuntime()
    await feed_of(runtime).handle(PARTNER, *submission(party="440000"))
    [(kind, answer)] = answers(runtime)
    assert (kind, answer["problems"]) == (topics.SUBMISSION_REFUSED_EVENT, [UNREADABLE])


async def test_the_refusal_is_made_by_the_handler_keyed_by_the_submission():
    outcome = await handlers.partner_refuse(handlers.Event("c1", handlers.PARTNER_REFUSE, "TBX", {
        "partner": PARTNER, "submission_id": "HB-9", "problems": ["matter_code is required"], "refused_at": T0},
        {"occurred_at": T0}, "command"), None)
    [emit] = outcome.emits
    assert (emit.topic, emit.key, emit.payload["problems"]) == (ACKS, "HB-9", ["matter_code is required"])


def test_every_declared_authority_partner_has_a_submissions_stream():
    assert {"420000", "440000", "430000"} <= set(submitters())
    assert not {"ems", "wallet"} & set(submitters())


async def test_an_application_numbered_before_its_submission_was_recorded_is_adopted_and_answered():
    """NUMBER and PARTNER_SUBMIT are on different partitions: the numbered application may come
    back to the view before the submission is recorded there."""
    runtime = InstantRuntime()
    recorded: list = []

    async def submit_numbering_first(command_type, key, command_id, payload):
        if command_type == handlers.PARTNER_SUBMIT:
            recorded.append((command_type, key, command_id, payload))  # held back
            return
        await InstantRuntime.submit(runtime, command_type, key, command_id, payload)

    runtime.submit = submit_numbering_first
    await feed_of(runtime).handle(PARTNER, *submission())
    assert answers(runtime) == [], "no partner to answer yet"
    [held] = recorded
    await InstantRuntime.submit(runtime, *held)
    [(kind, answer)] = answers(runtime)
    [received] = [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    assert (kind, answer["application_number"]) == (topics.SUBMISSION_RECEIVED_EVENT,
                                                    received.payload["application_number"])
    view = runtime.states[answer["application_id"]]
    assert (view["source_system"], view["partner_submission"]["submission_id"]) == ("partner-420000", "HB-0001")
    await InstantRuntime.submit(runtime, *submission_command(held, phone="13900000000"))
    assert [kind for kind, _ in answers(runtime)][-1] == topics.SUBMISSION_REFUSED_EVENT, "then compared as usual"


def submission_command(held: tuple, phone: str) -> tuple:
    """The PARTNER_SUBMIT command of another payload under the same submission id."""
    command_type, key, _, payload = held
    application_id = payload["application_id"]
    changed = {**payload["fingerprints"], "applicant.phone": domain.fingerprints(
        application_id, {"applicant.phone": phone})["applicant.phone"]}
    return command_type, key, "partner-submit:other", {**payload, "fingerprints": changed}


@dataclass(frozen=True)
class Record:
    value: bytes | None
    topic: str = f"tongban.partner.{PARTNER}.submissions"
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"HB-0001"
    headers: tuple = ()


def another_event() -> bytes:
    return encode_event(REGISTRY, "tongban.application.ApplicationUnroutable",
                        {"application_id": "TB1", "matter_code": "KSTB-MED-01", "reason": "r"},
                        cause_id="c", correlation_id="TB1", source_system="partner-420000")[1]


@pytest.mark.parametrize(("value", "reason"), [
    (None, "tombstone"),
    (b"\x00\x01 not avro", "not a readable Avro event"),
    (another_event(), "ApplicationUnroutable on a submissions topic"),
])
async def test_a_record_that_is_no_submission_is_dead_lettered_with_its_reason(value, reason):
    """No submission id to answer: the partner hears nothing and resends, and the operator
    finds the record and why in the reader's own dead letters. Nothing is handed over."""
    runtime = InstantRuntime()
    settings = reader_settings(load_settings("intake", {}))
    dead = await feed_of(runtime).hand_over(settings, PARTNER, Record(value))
    assert dead is not None
    assert dead.topic == "tongban.dlq.tongban-intake-partners"
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["tongban.dlq.group"] == "tongban-intake-partners"
    assert headers["tongban.dlq.origin.offset"] == "7"
    assert reason in headers["tongban.dlq.error.message"]
    assert (runtime.commands, runtime.published) == ([], [])
