"""Intake's rules through its handlers: the progress view an applicant tracks, how it ends,
and 好差评 ratings of concluded applications. No broker."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from services.intake import domain, handlers
from tongban.events import derive_event_id
from tongban.handling import Event, Outcome, Rejected

APP = "TBUNIT"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NAME, ID_NUMBER, PHONE = "张三", "420106198506123410", "13800000000"
P = "tongban.application."

SUBMITTED = {"application_id": APP, "matter_code": "KSTB-MED-01", "channel": "PORTAL",
             "receiving_division": "430102", "home_division": "420106",
             "applicant": {"kind": "PERSON", "name": NAME, "id_number": ID_NUMBER, "phone": PHONE},
             "materials": [{"code": "RESIDENT_ID", "name": "居民身份证", "provided": True, "original_checked": True}],
             "delivery_method": "POST", "postal_address": "长沙市天心区", "submitted_at": T0}
ROUTED = (P + "ApplicationRouted", {"application_id": APP, "matter_code": "KSTB-MED-01", "mode": "FULLY_ONLINE",
                                    "deciding_partner": "420000", "deciding_division": "420106", "legs": [],
                                    "promised_working_days": 3, "due_at": T0 + timedelta(days=3)})
UNROUTABLE = (P + "ApplicationUnroutable", {"application_id": APP, "matter_code": "KSTB-MED-01",
                                            "reason": "matter code is not in the catalogue"})
VERIFIED = (P + "ApplicationVerified", {"application_id": APP, "checks": []})
VERIFICATION_FAILED = (P + "ApplicationVerificationFailed",
                       {"application_id": APP, "reasons": ["applicant name is empty"],
                        "missing_materials": ["PHOTO", "RESIDENT_ID"]})
ACCEPTED = (P + "ApplicationAccepted", {"application_id": APP, "deciding_partner": "420000", "accepted_at": T0})
REFUSED = (P + "ApplicationRefused", {"application_id": APP, "deciding_partner": "420000", "reason": "材料无法读取"})
APPROVED = (P + "ApplicationDecided", {"application_id": APP, "deciding_partner": "420000", "outcome": "APPROVED",
                                       "result_reference": "LIC-1", "reason": None, "decided_at": T0})
DENIED = (P + "ApplicationDecided", {"application_id": APP, "deciding_partner": "420000", "outcome": "DENIED",
                                     "result_reference": None, "reason": "不符合法定条件", "decided_at": T0})
DELIVERED = (P + "ApplicationDelivered", {"application_id": APP, "method": "POST", "dispatch_id": "DSP1",
                                          "tracking_number": "EMS1", "delivered_at": T0})


def event(event_type: str, payload: dict, n: int = 0) -> Event:
    return Event(f"id-{n}-{event_type}", event_type, APP, payload,
                 {"occurred_at": T0 + timedelta(minutes=n), "correlation_id": APP}, "command")


SUBMIT_COMMAND = {**SUBMITTED, "received_by": {"source_system": "hunan-portal", "role": "portal"},
                  "fingerprints": {"matter_code": "a1b2c3"}}


async def submitted() -> dict:
    return (await handlers.submit(event(handlers.SUBMIT, SUBMIT_COMMAND), None)).state


async def feed(*steps, state: dict | None = None) -> tuple[dict | None, list[Outcome]]:
    outcomes = []
    for n, (event_type, payload) in enumerate(steps, start=1):
        outcome = await handlers.HANDLERS[event_type](event(event_type, payload, n), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


async def rate(state: dict | None, level: int = 2, channel: str = "ONLINE", comment: str | None = "很好",
               event_id: str = "rate-1") -> Outcome:
    body = {"level": level, "channel": channel, "comment": comment, "rated_at": T0}
    return await handlers.rate(Event(event_id, handlers.RATE, APP, body, {"occurred_at": T0}, "command"), state)


# ---------------------------------------------------------------------------- submit

async def test_a_submission_is_recorded_with_its_fingerprints_and_published_once_numbered():
    outcome = await handlers.submit(event(handlers.SUBMIT, SUBMIT_COMMAND), None)
    assert outcome.emits == []
    assert outcome.finished is False
    assert outcome.state["fingerprints"] == [{"field": "matter_code", "digest": "a1b2c3"}]
    counter = domain.numbering_key(APP)
    numbered = await handlers.number(Event("number-1", handlers.NUMBER, counter, SUBMIT_COMMAND,
                                           {"occurred_at": T0}, "command"), None)
    [emit] = numbered.emits
    number = emit.payload.pop("application_number")
    assert (emit.topic, emit.event_type, emit.key, emit.payload) == (
        "tongban.application.received", P + "ApplicationReceived", APP, SUBMITTED)
    assert number == f"430102-20261102-{counter[-2:]}00001-{number[-1]}"
    assert domain.is_valid_number(number)
    assert numbered.state == {"day": "20261102", "next": 2}


async def test_a_new_application_starts_at_received():
    state = await submitted()
    assert state["application_id"] == APP
    assert state["matter_code"] == "KSTB-MED-01"
    assert state["stage"] == "RECEIVED"
    assert state["terminal"] is False
    assert state["history"] == [{"stage": "RECEIVED", "at": T0, "detail": "", "sequence": 1,
                                 "responsible": "RECEIVING_WINDOW"}]
    assert state["receiving_division"] == "430102"
    assert state["ratings"] == []


async def test_the_progress_view_holds_no_personal_data():
    state, _ = await feed(ROUTED, VERIFIED, ACCEPTED, APPROVED, DELIVERED, state=await submitted())
    text = repr(state)
    assert "applicant" not in state
    for value in (NAME, ID_NUMBER, PHONE, "长沙市天心区"):
        assert value not in text


# ---------------------------------------------------------------------------- progress

async def test_routing_moves_the_view_to_routed_with_the_deciding_authority_and_due_date():
    state, [outcome] = await feed(ROUTED, state=await submitted())
    assert state["stage"] == "ROUTED"
    assert state["deciding_partner"] == "420000"
    assert state["due_at"] == T0 + timedelta(days=3)
    assert state["history"][-1] == {"stage": "ROUTED", "at": T0 + timedelta(minutes=1), "detail": "FULLY_ONLINE",
                                    "sequence": 2, "responsible": "DECIDING_AUTHORITY:420000"}
    assert outcome.finished is False


async def test_routing_names_the_matter_even_when_it_arrives_before_the_submission_is_seen():
    state, _ = await feed(ROUTED)
    assert state["matter_code"] == "KSTB-MED-01"
    assert state["application_id"] == APP


@pytest.mark.parametrize(("step", "stage", "detail"), [
    (VERIFIED, "VERIFIED", ""),
    (ACCEPTED, "ACCEPTED", "420000"),
    (APPROVED, "DECIDED", ""),
])
async def test_each_intermediate_step_moves_the_view_forward_and_the_work_goes_on(step, stage, detail):
    state, [outcome] = await feed(step, state=await submitted())
    assert state["stage"] == stage
    assert state["terminal"] is False
    assert state["history"][-1]["detail"] == detail
    assert outcome.finished is False


async def test_an_approval_records_the_result_reference():
    state, _ = await feed(APPROVED, state=await submitted())
    assert state["result_reference"] == "LIC-1"


@pytest.mark.parametrize(("step", "stage", "detail"), [
    (DELIVERED, "DELIVERED", "POST"),
    (DENIED, "DENIED", "不符合法定条件"),
    (UNROUTABLE, "REJECTED", "matter code is not in the catalogue"),
    (REFUSED, "REJECTED", "材料无法读取"),
    (VERIFICATION_FAILED, "REJECTED", "applicant name is empty; 补正: PHOTO; 补正: RESIDENT_ID"),
])
async def test_a_terminal_step_concludes_the_application_with_its_reason_and_ends_the_work(step, stage, detail):
    state, [outcome] = await feed(step, state=await submitted())
    assert state["stage"] == stage
    assert state["terminal"] is True
    assert state["history"][-1]["detail"] == detail
    assert outcome.finished is True
    assert [h["stage"] for h in state["history"]] == ["RECEIVED", stage], "the earlier steps are kept"
    assert state["receiving_division"] == "430102"
    assert state["matter_code"] == "KSTB-MED-01"


async def test_a_delivery_records_the_tracking_number():
    state, _ = await feed(DELIVERED, state=await submitted())
    assert state["tracking_number"] == "EMS1"


async def test_the_view_never_moves_backwards_when_events_arrive_out_of_order():
    state, _ = await feed(ACCEPTED, VERIFIED, ROUTED, state=await submitted())
    assert state["stage"] == "ACCEPTED"
    assert [h["stage"] for h in state["history"]] == ["RECEIVED", "ACCEPTED", "VERIFIED", "ROUTED"]


async def test_a_concluded_application_stays_concluded():
    state, outcomes = await feed(DELIVERED, APPROVED, VERIFIED, state=await submitted())
    assert state["stage"] == "DELIVERED"
    assert state["terminal"] is True
    assert all(o.finished for o in outcomes)


async def test_a_denial_is_not_a_delivery():
    state, _ = await feed(DENIED, state=await submitted())
    assert state["stage"] == "DENIED"
    assert "result_reference" not in state


# ---------------------------------------------------------------------------- ratings

async def test_a_concluded_application_can_be_rated_once_per_rating_and_the_rating_is_published():
    state, _ = await feed(ROUTED, DELIVERED, state=await submitted())
    outcome = await rate(state, level=5, channel="MOBILE", comment="太慢")
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.feedback.ratings", "tongban.feedback.ServiceRating", APP)
    assert emit.payload == {"rating_id": derive_event_id("rate-1", "rating"), "application_id": APP,
                            "matter_code": "KSTB-MED-01", "division_code": "430102", "party": "420000",
                            "level": 5, "channel": "MOBILE", "comment": "太慢", "rated_at": T0,
                            "rated_role": "SERVICE", "interaction_id": None}
    assert outcome.state["ratings"] == [{"rating_id": derive_event_id("rate-1", "rating"), "level": 5,
                                         "rated_role": "SERVICE", "channel": "MOBILE", "interaction_id": ""}]
    assert outcome.finished is True, "the rated application goes back to the archive"


async def test_the_same_rating_request_gets_the_same_rating_id():
    state, _ = await feed(DELIVERED, state=await submitted())
    first = (await rate(dict(state))).emits[0].payload["rating_id"]
    assert (await rate(dict(state))).emits[0].payload["rating_id"] == first
    assert (await rate(dict(state), event_id="rate-2")).emits[0].payload["rating_id"] != first


async def test_an_empty_comment_is_published_as_none():
    state, _ = await feed(DENIED, state=await submitted())
    assert (await rate(state, comment="")).emits[0].payload["comment"] is None


async def test_a_second_online_rating_of_the_same_service_is_refused():
    state, _ = await feed(REFUSED, state=await submitted())
    state = (await rate(state, level=1)).state
    with pytest.raises(Rejected, match="一事一评"):
        await rate(state, level=4, event_id="rate-2")
    assert [r["level"] for r in state["ratings"]] == [1]


async def test_an_application_still_in_progress_cannot_be_rated():
    state, _ = await feed(ROUTED, state=await submitted())
    with pytest.raises(Rejected, match="once it is concluded"):
        await rate(state)


async def test_an_unknown_application_cannot_be_rated():
    with pytest.raises(Rejected, match=r"^no such application$"):
        await rate(None)


@pytest.mark.parametrize("level", [0, 6])
async def test_a_rating_level_outside_one_to_five_is_refused(level):
    state, _ = await feed(DELIVERED, state=await submitted())
    with pytest.raises(Rejected, match="level must be 1"):
        await rate(state, level=level)


async def test_a_rating_channel_outside_the_list_is_refused():
    state, _ = await feed(DELIVERED, state=await submitted())
    with pytest.raises(Rejected, match="channel must be one of"):
        await rate(state, channel="FAX")


async def test_a_refused_ratings_reason_never_carries_the_comment():
    state, _ = await feed(DELIVERED, state=await submitted())
    with pytest.raises(Rejected) as rejected:
        await rate(state, level=9, channel="张三 13800000000", comment=f"{NAME} {PHONE} 太慢")
    assert NAME not in str(rejected.value)
    assert PHONE not in str(rejected.value)


async def test_a_comment_longer_than_the_limit_is_refused_without_being_echoed():
    state, _ = await feed(DELIVERED, state=await submitted())
    with pytest.raises(Rejected, match="comment") as rejected:
        await rate(state, comment=PHONE * (domain.MAX_COMMENT_LENGTH // len(PHONE) + 1))
    assert PHONE not in str(rejected.value)
    assert (await rate(state, comment="好" * domain.MAX_COMMENT_LENGTH)).emits


async def test_a_rating_of_an_application_whose_submission_was_not_seen_names_empty_division_and_party():
    state, _ = await feed(DELIVERED)
    payload = (await rate(state)).emits[0].payload
    assert (payload["division_code"], payload["party"]) == ("", "")


async def test_a_rating_without_routing_names_no_party():
    state = await submitted()
    state, _ = await feed(UNROUTABLE, state=state)
    assert (await rate(state)).emits[0].payload["party"] == ""


# ---------------------------------------------------------------------------- the words an applicant reads
# The formal check answers the caller field by field (补正 asks once); each problem is
# pinned so that a changed wording is a decision, not an accident.

def submission(**changes) -> domain.Submission:
    fields = dict(matter_code="KSTB-MED-01", channel="PORTAL", receiving_division="430102",
                  home_division="420106", applicant_kind="PERSON", applicant_name=NAME,
                  applicant_id_number=ID_NUMBER, materials=("RESIDENT_ID",),
                  delivery_method="ELECTRONIC", postal_address=None)
    return domain.Submission(**{**fields, **changes})


def problems(**changes) -> list[str]:
    with pytest.raises(domain.InvalidSubmission) as invalid:
        domain.check_submission(submission(**changes))
    assert str(invalid.value) == "; ".join(invalid.value.problems)
    return invalid.value.problems


def test_every_formal_problem_is_named_exactly_and_all_at_once():
    assert problems(matter_code=" ", channel="FAX", receiving_division="1", home_division="42",
                    applicant_kind="ROBOT", applicant_name=" ", applicant_id_number=" ", materials=(),
                    delivery_method="PIGEON") == [
        "matter_code is required",
        "channel must be one of WINDOW, PORTAL, MOBILE, TERMINAL, PARTNER",
        "receiving_division must be a 6- or 12-digit division code",
        "home_division must be a 6- or 12-digit division code",
        "applicant.kind must be one of PERSON, COMPANY",
        "applicant.name is required",
        "applicant.id_number is required",
        "materials: at least one must be listed",
        "delivery_method must be one of ELECTRONIC, POST, WINDOW",
    ]


def test_post_delivery_needs_a_postal_address():
    assert problems(delivery_method="POST", postal_address=" ") == ["postal_address is required for POST delivery"]


def test_a_long_list_of_too_long_materials_is_one_problem_that_counts_the_rest():
    [one] = problems(materials=("X" * 65, "RESIDENT_ID"))
    assert one.startswith("materials[0].code")
    assert "more too long" not in one
    [two] = problems(materials=("RESIDENT_ID", "X" * 65, "Y" * 70))
    assert two.startswith("materials[1].code")
    assert two.endswith("; 1 more too long)")


def test_every_rating_problem_is_named_exactly():
    with pytest.raises(domain.InvalidSubmission) as invalid:
        domain.check_rating({"stage": "ROUTED"}, 0, "FAX")
    assert invalid.value.problems == ["an application can be rated once it is concluded or decided",
                                      "level must be 1 (非常满意) to 5 (非常不满意)",
                                      "channel must be one of ONSITE, ONLINE, MOBILE, HOTLINE"]


def test_an_application_id_is_tb_and_twenty_capital_hex_digits_fixed_by_source_and_reference():
    first = domain.application_id_for("portal", "ref-1")
    assert re.fullmatch(r"TB[0-9A-F]{20}", first)
    assert domain.application_id_for("portal", "ref-1") == first != domain.application_id_for("window", "ref-1")


def test_a_step_seen_before_the_submission_starts_an_empty_view():
    view = domain.advance(None, APP, "VERIFIED", T0)
    assert view == {"application_id": APP, "matter_code": "", "stage": "VERIFIED", "terminal": False,
                    "history": [{"stage": "VERIFIED", "at": T0, "detail": "", "sequence": 1,
                                 "responsible": "DECIDING_AUTHORITY"}], "ratings": [], "notices": []}


# ---------------------------------------------------------------------------- personal data in free text

async def test_material_names_that_repeat_the_applicant_are_scrubbed_before_they_travel():
    careless = {"code": "POWER", "name": f"{NAME}的委托书 {ID_NUMBER} 电话{PHONE}", "provided": True,
                "original_checked": False}
    outcome = await handlers.number(event(handlers.NUMBER, {**SUBMITTED, "materials": [careless]}), None)
    [emit] = outcome.emits
    assert emit.payload["materials"] == [{**careless, "name": "[NAME]的委托书 [NAME] 电话[NAME]"}]
    assert emit.payload["applicant"] == SUBMITTED["applicant"], "sealed by the runtime, not here"


async def test_details_shown_by_track_are_scrubbed_of_id_and_phone_numbers():
    state = await submitted()
    leaky = (P + "ApplicationRefused", {"application_id": APP, "deciding_partner": "420000",
                                        "reason": f"证件{ID_NUMBER}与电话{PHONE}不符"})
    state, _ = await feed(leaky, state=state)
    assert state["history"][-1]["detail"] == "证件[ID]与电话[PHONE]不符"
    assert ID_NUMBER not in repr(state)
    assert PHONE not in repr(state)
