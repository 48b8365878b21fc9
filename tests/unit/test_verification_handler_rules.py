"""Verification's rules through its real handlers that the mutation run found unguarded: how
often a provider that is down is asked again, and a matter the catalogue does not list
(every material it names must be there) checked, published, finished and forgotten like
any other. The handlers, fake provider port and feeding are test_verification_rules.py's."""

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from services.verification import handlers, matters
from tests.unit.test_verification_rules import (
    APP,
    CIPHER,
    COMMITMENT_CHECK,
    MATERIAL,
    NAME,
    RETRY,
    ROUTED,
    T0,
    VALID_ID,
    Providers,
    feed,
    feed_from,
    handle,
    holds_personal_data,
    material,
    received,
)
from tongban import topics
from tongban.handling import Event

OUTSIDE = "KSTB-XXX-99"  # routed, but not (or no longer) in the catalogue verification follows


async def test_a_provider_that_is_down_is_asked_again_after_5_s_then_twice_as_long_each_time_up_to_5_minutes():
    providers = Providers(down={"mps"})
    mats = [material("RESIDENT_ID"), material("HOUSEHOLD_REGISTER"),
            material("SETTLEMENT_PROOF", original_checked=True)]
    state, _ = await feed(received(materials=mats, matter="KSTB-PSB-01"), providers=providers)
    waits = []
    for step in (ROUTED, *[RETRY] * 7):
        before = datetime.now(UTC)
        outcome = await handle(step, state, providers)
        after = datetime.now(UTC)
        state = outcome.state
        [timer] = outcome.timers
        waits.append((timer.due_at - before, timer.due_at - after))
    expected = [5, 10, 20, 40, 80, 160, 300, 300]
    for (longest, shortest), seconds in zip(waits, expected, strict=True):
        assert shortest <= timedelta(seconds=seconds) <= longest


async def test_a_matter_outside_the_catalogue_with_every_material_it_names_is_verified_and_done():
    _, outcomes = await feed(received(materials=[MATERIAL], matter=OUTSIDE), ROUTED)
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        topics.APPLICATION_VERIFIED, topics.APPLICATION_VERIFIED_EVENT, APP)
    assert emit.payload == {
        "application_id": APP,
        "checks": [{"check": "applicant_name", "outcome": "PASSED", "detail": "name given"},
                   {"check": "resident_id", "outcome": "PASSED", "detail": "resident ID number is valid"},
                   {"check": "material:RESIDENT_ID", "outcome": "PASSED", "detail": "provided, original checked"}],
        "materials": []}
    assert outcomes[-1].finished is True


async def test_a_failed_check_of_a_matter_outside_the_catalogue_is_published_on_the_verified_topic_under_its_id():
    missing = [{**MATERIAL, "provided": False}]
    _, outcomes = await feed(received(materials=missing, matter=OUTSIDE), ROUTED)
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        topics.APPLICATION_VERIFIED, topics.APPLICATION_VERIFICATION_FAILED_EVENT, APP)
    assert outcomes[-1].finished is True


@pytest.mark.parametrize("provided", [True, False])
@pytest.mark.parametrize("order", ["received first", "routed first"])
async def test_personal_data_is_not_kept_after_checking_a_matter_outside_the_catalogue(order, provided):
    file = received(materials=[{**MATERIAL, "provided": provided}], matter=OUTSIDE)
    state, _ = await feed(*((file, ROUTED) if order == "received first" else (ROUTED, file)))
    assert not holds_personal_data(state)


async def test_a_repeated_input_after_a_matter_outside_the_catalogue_was_checked_verifies_nothing_again():
    file = received(materials=[MATERIAL], matter=OUTSIDE)
    state, _ = await feed(file, ROUTED)
    for step in (file, ROUTED):
        state, [again] = await feed_from(state, step, providers=Providers())
        assert again.emits == []
        assert again.finished is True
        assert not holds_personal_data(state)


@dataclass
class Recording(Providers):
    """The fake port, also noting the application and matter each query is made for."""

    made_for: list = field(default_factory=list)

    async def query(self, application_id, matter_code, evidence_type, subject_id, declared):
        self.made_for.append((application_id, matter_code, evidence_type))
        return await super().query(application_id, matter_code, evidence_type, subject_id, declared)


HOUSEHOLD_FILE = [material("RESIDENT_ID", original_checked=True), material("HOUSEHOLD_REGISTER", "户口簿"),
                  material("SETTLEMENT_PROOF", original_checked=True)]


async def test_each_provider_is_asked_for_the_application_and_matter_its_demand_was_approved_for():
    providers = Recording()
    await feed(received(materials=HOUSEHOLD_FILE, matter="KSTB-PSB-01"), ROUTED, providers=providers)
    assert sorted(providers.made_for) == [(APP, "KSTB-PSB-01", "HOUSEHOLD"), (APP, "KSTB-PSB-01", "IDENTITY")]


async def test_a_file_that_names_no_places_declares_its_home_division_as_the_household_place():
    providers = Providers()
    await feed(received(materials=HOUSEHOLD_FILE, matter="KSTB-PSB-01", home="370102"), ROUTED, providers=providers)
    assert ("HOUSEHOLD", VALID_ID, {"name": NAME, "household_division": "370102"}) in providers.asked


async def test_a_refused_evidence_query_is_logged_for_the_operator_with_the_application_the_evidence_and_why(caplog):
    caplog.set_level(logging.WARNING, logger="services.verification.handlers")
    await feed(received(materials=[material("RESIDENT_ID", original_checked=True)]), ROUTED,
               providers=Providers(refused={"IDENTITY"}))
    [record] = [r for r in caplog.records if r.name == "services.verification.handlers"]
    assert (record.levelno, record.getMessage()) == (logging.WARNING, "evidence query refused")
    assert record.fields == {"application_id": APP, "evidence_type": "IDENTITY", "reason": "no approved demand"}


COMMITTED = received(materials=[material("RESIDENT_ID", original_checked=True),
                                material("TRANSFER_APPLICATION", original_checked=True)],
                     matter="KSTB-SOC-01", commitments=["CONTRIBUTION_CERTIFICATE"])


async def test_a_later_check_of_a_promise_that_the_provider_refuses_is_recorded_as_not_allowed():
    providers = Providers(refused={"SOCIAL_INSURANCE"})
    state, _ = await feed(COMMITTED, ROUTED, providers=providers)
    state, [later] = await feed_from(state, COMMITMENT_CHECK, providers=providers)
    assert state["commitment_check"] == {"SOCIAL_INSURANCE": "NOT_ALLOWED"}
    assert later.finished is True


async def test_a_repeated_input_while_a_promise_awaits_its_later_check_keeps_the_work_open():
    providers = Providers()
    state, _ = await feed(COMMITTED, ROUTED, providers=providers)
    for step in (COMMITTED, ROUTED):
        again = await handle(step, state, providers)
        assert again.emits == []
        assert again.finished is False, "kept for the later check of what was promised"


async def test_while_a_provider_is_down_the_notice_of_what_is_awaited_is_published_under_the_application():
    providers = Providers(down={"mps"})
    _, outcomes = await feed(received(materials=HOUSEHOLD_FILE, matter="KSTB-PSB-01"), ROUTED, providers=providers)
    [awaited] = outcomes[-1].emits
    assert (awaited.topic, awaited.event_type, awaited.key) == (
        topics.APPLICATION_VERIFIED, topics.EVIDENCE_AWAITED_EVENT, APP)
    assert awaited.payload == {"application_id": APP, "providers": ["mps"], "evidence_types": ["HOUSEHOLD"],
                               "next_attempt_at": outcomes[-1].timers[0].due_at}


async def test_a_material_accepted_as_rongque_stays_deferred_though_the_catalogue_now_makes_it_essential():
    # the catalogue changed between intake's check (RESIDENCE_PROOF optional, so 容缺) and this one
    now = {code: tuple(replace(r, essential=True) if r.code == "RESIDENCE_PROOF" else r for r in required)
           for code, required in matters.load().items()}
    events, _ = handlers.make_handlers(CIPHER, Providers(verdicts={"IDENTITY": ("NOT_FOUND", ())}), now)
    kind, body = received()
    body = {**body, "deferred_materials": {"RESIDENCE_PROOF": "2026-11-30"}}
    state = (await events[kind](Event("id-r", kind, APP, body, {"occurred_at": T0}, "t"), None)).state
    outcome = await events[ROUTED[0]](Event("id-o", ROUTED[0], APP, ROUTED[1], {"occurred_at": T0}, "t"), state)
    [emit] = outcome.emits
    assert emit.event_type == topics.APPLICATION_VERIFIED_EVENT
    assert emit.payload["materials"][-1] == {"code": "RESIDENCE_PROOF", "satisfied_by": "DEFERRED",
                                             "detail": "容缺: accepted, the result waits for it",
                                             "evidence_reference": ""}


async def test_what_was_promised_is_checked_against_the_records_twenty_days_after_the_file_is_verified():
    providers = Providers()
    state, _ = await feed(COMMITTED, providers=providers)
    before = datetime.now(UTC)
    outcome = await handle(ROUTED, state, providers)
    after = datetime.now(UTC)
    [timer] = outcome.timers
    assert timer.name == handlers.COMMITMENT_CHECK
    assert before + timedelta(days=20) <= timer.due_at <= after + timedelta(days=20)


@pytest.mark.parametrize(("places", "declared"), [
    ({"INSURED_BEFORE": "440103"}, "440103"),  # the place the file names
    ({}, "420106"),  # a v1 file: its home division
])
async def test_the_later_check_of_a_promise_declares_the_place_the_file_named(places, declared):
    providers = Providers()
    kind, body = COMMITTED
    state, _ = await feed((kind, {**body, "places": places}), ROUTED, providers=providers)
    await feed_from(state, COMMITMENT_CHECK, providers=providers)
    assert providers.asked[-1] == ("SOCIAL_INSURANCE", VALID_ID, {"name": NAME, "insured_division": declared})


async def test_a_result_reached_while_a_provider_retry_is_pending_cancels_the_retry():
    providers = Providers(down={"mps"})
    state, [_, waiting] = await feed(received(materials=HOUSEHOLD_FILE, matter="KSTB-PSB-01"), ROUTED,
                                     providers=providers)
    assert [t.name for t in waiting.timers] == [handlers.EVIDENCE_RETRY]
    providers.down.clear()
    done = await handle(ROUTED, state, providers)  # routing's decision redelivered, the provider back
    assert done.emits[0].event_type == topics.APPLICATION_VERIFIED_EVENT
    assert done.cancel_timers == [handlers.EVIDENCE_RETRY]
