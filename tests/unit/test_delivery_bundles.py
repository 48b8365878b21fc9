"""一件事一次办 in delivery, through its handlers: each approved result of a bundle routed
together waits until every application of the bundle is settled, then they go out together;
an application that ends without a result does not hold the others; the hold runs out.

`feed` plays the runtime's part: every file and the bundle have their own state, and what
delivery writes on its decided topic for itself comes back to the aggregate `keys()` names."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from services.delivery import bundles, handlers
from services.delivery.channels.base import Deployment
from services.delivery.matters import Matter
from tests.pii_parties import cipher, seal_received
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.handling import Emit, Event, Outcome

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
A, B = "TBBUNDLEA", "TBBUNDLEB"
BUNDLE = "TBB0123456789"
MATTERS = {"KSTB-HPF-02": Matter(True, "PAPER_LICENCE"), "KSTB-SOC-04": Matter(True, "PAPER_LICENCE")}
MATTER_OF = {A: "KSTB-SOC-04", B: "KSTB-HPF-02"}
DECISIONS = topics.partner_decisions("440000")
KEYS = handlers.keys()  # the aggregate an event goes to, where not its record key
READ_BACK = (topics.BUNDLE_MEMBER_DECIDED_EVENT, topics.BUNDLE_RESULTS_RELEASED_EVENT)


REGISTRY = SchemaRegistry.load()
DELIVERY_CIPHER = cipher("delivery")


def delivery_handlers() -> dict:
    # built when a test runs, not at import, so that mutation testing sees which tests run them
    return handlers.make_handlers(DELIVERY_CIPHER, REGISTRY, clock=lambda: T0,
                                  results=Deployment(secret=b"bundles", matters=lambda code: MATTERS[code]))


@dataclass
class Delivery:
    """Delivery's aggregates as the runtime keeps them, and everything it wrote, in order."""

    states: dict[str, dict] = field(default_factory=dict)
    finished: dict[str, bool] = field(default_factory=dict)
    written: list[Emit] = field(default_factory=list)
    count: int = 0

    async def handle(self, key: str, event_type: str, payload: dict, topic: str) -> Outcome:
        self.count += 1
        event = Event(f"id-{self.count}", event_type, key, payload, {"occurred_at": T0, "correlation_id": key}, topic)
        if event_type in KEYS:
            key = KEYS[event_type](event)
            event = Event(event.event_id, event_type, key, payload, event.envelope, topic)
        outcome = await delivery_handlers()[event_type](event, self.states.get(key))
        if outcome.state is not None:
            self.states[key] = outcome.state
            self.finished[key] = outcome.finished
        self.written += outcome.emits
        for emitted in outcome.emits:  # delivery reads its bundles' events back (its decided topic)
            if emitted.event_type in READ_BACK:
                assert emitted.topic == topics.APPLICATION_DECIDED
                await self.handle(emitted.key, emitted.event_type, emitted.payload, emitted.topic)
        return outcome

    def types(self, key: str | None = None) -> list[str]:
        return [e.event_type for e in self.written if key is None or e.key == key]

    def dispatched(self, key: str) -> bool:
        return topics.POSTAL_DISPATCH_EVENT in self.types(key)


async def feed(*steps, delivery: Delivery | None = None) -> Delivery:
    delivery = delivery or Delivery()
    for key, event_type, payload, topic in steps:
        await delivery.handle(key, event_type, payload, topic)
    return delivery


def received(app: str) -> tuple:
    applicant = {"kind": "PERSON", "name": "示例", "id_number": "430102199003071234", "phone": "13800000000"}
    payload = {"applicant": {k: v if k == "kind" else seal_received(v, f"applicant.{k}", app)
                             for k, v in applicant.items()},
               "materials": [{"code": "RESIDENT_ID", "name": "居民身份证", "provided": True, "original_checked": True}],
               "delivery_method": "POST", "postal_address": seal_received("长沙", "postal_address", app),
               "matter_code": MATTER_OF[app], "bundle_id": BUNDLE}
    return app, topics.APPLICATION_RECEIVED_EVENT, payload, topics.APPLICATION_RECEIVED


def released(app: str, release: str = "ROUTE") -> tuple:
    payload = {"application_id": app, "bundle_id": BUNDLE, "bundle_code": "BUNDLE-RETIREMENT",
               "applications": [B, A], "release": release, "reason": "", "released_at": T0}
    return app, topics.BUNDLE_RELEASED_EVENT, payload, topics.APPLICATION_ROUTED


def routed(app: str) -> tuple:
    payload = {"application_id": app, "matter_code": MATTER_OF[app], "mode": "RECEIVE_HERE_HANDLE_THERE",
               "deciding_partner": "440000", "deciding_division": "440300", "legs": [],
               "promised_working_days": 3, "due_at": T0}
    return app, topics.APPLICATION_ROUTED_EVENT, payload, topics.APPLICATION_ROUTED


def verified(app: str) -> tuple:
    return app, topics.APPLICATION_VERIFIED_EVENT, {"application_id": app, "checks": []}, topics.APPLICATION_VERIFIED


def answer(app: str, outcome: str = "ACCEPTED") -> tuple:
    payload = {"assignment_id": f"{app}:440000", "application_id": app, "outcome": outcome,
               "reason": "不属于本机关职权范围" if outcome == "REFUSED" else None, "accepted_at": T0}
    return app, topics.AUTHORITY_ACCEPTANCE_EVENT, payload, DECISIONS


def decision(app: str, outcome: str) -> tuple:
    payload = {"assignment_id": f"{app}:440000", "application_id": app, "outcome": outcome,
               "result_reference": f"REF-{app}" if outcome == "APPROVED" else None,
               "reason": "不符合法定条件" if outcome == "DENIED" else None, "decided_at": T0}
    return app, topics.AUTHORITY_DECISION_EVENT, payload, DECISIONS


def withdrawn(app: str) -> tuple:
    return (app, topics.APPLICATION_WITHDRAWN_EVENT, {"application_id": app, "reason": "不再需要", "withdrawn_at": T0},
            topics.APPLICATION_RECEIVED)


def verification_failed(app: str, outcome: str = "FAILED") -> tuple:
    payload = {"application_id": app, "reasons": ["the identity number is invalid"], "missing_materials": [],
               "outcome": outcome, "materials": []}
    return app, topics.APPLICATION_VERIFICATION_FAILED_EVENT, payload, topics.APPLICATION_VERIFIED


def accepted(app: str, release: str = "ROUTE") -> tuple:
    """The file as the bundle routed together reaches the authority's acceptance."""
    return received(app), released(app, release), routed(app), verified(app), answer(app)


def hold_ran_out() -> tuple:
    payload = {"timer_id": "t", "name": bundles.HOLD_TIMER, "payload": None}
    return bundles.key(BUNDLE), bundles.HOLD_TIMER, payload, "timer"


def members_told(delivery: Delivery) -> dict[str, dict]:
    return {e.key: e.payload for e in delivery.written if e.event_type == topics.BUNDLE_MEMBER_DECIDED_EVENT}


# ---------------------------------------------------------------------------- held, then together

async def test_an_approved_result_of_a_bundle_waits_until_every_application_of_it_is_decided():
    delivery = await feed(*accepted(A), *accepted(B), decision(A, "APPROVED"))
    assert topics.APPLICATION_DECIDED_EVENT in delivery.types(A), "the decision itself is published at once"
    assert not delivery.dispatched(A)
    assert members_told(delivery)[A] | {"settled_at": None} == {
        "application_id": A, "bundle_id": BUNDLE, "applications": [B, A], "outcome": "APPROVED", "held": True,
        "settled_at": None}
    assert delivery.states[bundles.key(BUNDLE)]["held"] == [A]

    await feed(decision(B, "APPROVED"), delivery=delivery)
    assert delivery.dispatched(A)
    assert delivery.dispatched(B)
    # Nothing went out before the last decision; then one dispatch per application, by its own channel.
    last_decision = max(i for i, e in enumerate(delivery.written) if e.event_type == topics.APPLICATION_DECIDED_EVENT)
    dispatches = [i for i, e in enumerate(delivery.written) if e.event_type == topics.POSTAL_DISPATCH_EVENT]
    assert len(dispatches) == 2
    assert min(dispatches) > last_decision
    bundle = delivery.states[bundles.key(BUNDLE)]
    assert (bundle["released"], delivery.finished[bundles.key(BUNDLE)]) == ([A, B], True)
    release = next(e for e in delivery.written if e.event_type == topics.BUNDLE_RESULTS_RELEASED_EVENT and e.key == A)
    assert release.payload["outcomes"] == {A: "APPROVED", B: "APPROVED"}
    assert release.payload["complete"] is True
    assert (release.qualifier, release.correlation_id) == (A, A)
    for app in (A, B):
        assert not delivery.finished[app], "each file is done when its channel delivers its result"


def unroutable(app: str) -> tuple:
    payload = {"application_id": app, "matter_code": MATTER_OF[app], "reason": "rejected on review"}
    return app, topics.APPLICATION_UNROUTABLE_EVENT, payload, topics.APPLICATION_ROUTED


ASSIGNED_B = (received(B), released(B), routed(B), verified(B))


@pytest.mark.parametrize(("before", "ending"), [
    pytest.param((*ASSIGNED_B, answer(B)), decision(B, "DENIED"), id="denied"),
    pytest.param(ASSIGNED_B, answer(B, "REFUSED"), id="not-accepted"),
    pytest.param(ASSIGNED_B, withdrawn(B), id="withdrawn"),
    pytest.param((received(B), released(B)), unroutable(B), id="rejected-on-review"),
])
async def test_an_application_that_ends_without_a_result_does_not_hold_the_others(before, ending):
    delivery = await feed(*accepted(A), *before, decision(A, "APPROVED"))
    assert not delivery.dispatched(A)
    await feed(ending, delivery=delivery)
    assert delivery.dispatched(A)
    assert not delivery.dispatched(B)
    assert delivery.finished[B]
    assert delivery.finished[bundles.key(BUNDLE)]
    assert members_told(delivery)[B]["held"] is False
    assert "applicant" not in delivery.states[B]["received"], "a finished file keeps no personal data"


async def test_results_held_while_the_others_wait_go_out_when_the_last_one_settles_whatever_its_outcome():
    delivery = await feed(*accepted(A), *accepted(B), decision(B, "DENIED"))
    assert not delivery.dispatched(A)
    assert not delivery.finished[bundles.key(BUNDLE)]
    await feed(decision(A, "APPROVED"), delivery=delivery)
    assert delivery.dispatched(A)
    [release] = [e for e in delivery.written if e.event_type == topics.BUNDLE_RESULTS_RELEASED_EVENT]
    assert (release.key, release.payload["outcomes"]) == (A, {A: "APPROVED", B: "DENIED"})


async def test_an_application_that_failed_verification_does_not_hold_the_others():
    delivery = await feed(*accepted(A), received(B), released(B), routed(B),
                          verification_failed(B, "SUPPLEMENT_REQUIRED"), decision(A, "APPROVED"))
    assert not delivery.dispatched(A), "a 补正 at verification is not an end: the bundle waits"
    await feed(verification_failed(B), delivery=delivery)
    assert delivery.dispatched(A)
    assert members_told(delivery)[B]["outcome"] == "VERIFICATION_FAILED"


async def test_an_application_withdrawn_before_its_bundle_was_released_tells_the_bundle_then_and_stays_finished():
    delivery = await feed(received(B), withdrawn(B))
    assert delivery.finished[B]
    await feed(released(B), delivery=delivery)
    assert members_told(delivery)[B]["outcome"] == "WITHDRAWN"
    assert delivery.finished[B], "the file's work stays done"
    await feed(*accepted(A), decision(A, "APPROVED"), delivery=delivery)
    assert delivery.dispatched(A)


async def test_a_settled_application_tells_its_bundle_once():
    delivery = await feed(*accepted(A), *accepted(B), decision(A, "APPROVED"))
    told = members_told(delivery)[A]
    again = await delivery_handlers()[topics.BUNDLE_MEMBER_DECIDED_EVENT](
        Event("again", topics.BUNDLE_MEMBER_DECIDED_EVENT, bundles.key(BUNDLE), told, {"occurred_at": T0}, "decided"),
        delivery.states[bundles.key(BUNDLE)])
    assert (again.emits, again.state) == ([], None)
    await feed(received(A), delivery=delivery)  # a later change to the file
    assert delivery.types(A).count(topics.BUNDLE_MEMBER_DECIDED_EVENT) == 1


# ---------------------------------------------------------------------------- not held

async def test_a_bundle_sent_to_review_is_not_held_together():
    delivery = await feed(*accepted(A, release="REVIEW"), decision(A, "APPROVED"))
    assert delivery.dispatched(A)
    assert topics.BUNDLE_MEMBER_DECIDED_EVENT not in delivery.types()


async def test_an_application_of_no_bundle_rejected_on_review_leaves_no_file():
    app, event_type, payload, topic = unroutable(A)
    outcome = await delivery_handlers()[event_type](Event("u", event_type, app, payload, {"occurred_at": T0}, topic),
                                                    None)
    assert (outcome.state, outcome.emits, outcome.finished) == (None, [], False)


async def test_an_application_of_no_bundle_goes_out_with_its_decision():
    app, event_type, payload, topic = received(A)
    alone = (app, event_type, {k: v for k, v in payload.items() if k != "bundle_id"}, topic)
    delivery = await feed(alone, routed(A), verified(A), answer(A), decision(A, "APPROVED"))
    assert delivery.dispatched(A)
    assert bundles.key(BUNDLE) not in delivery.states


# ---------------------------------------------------------------------------- the hold runs out

async def test_when_the_hold_runs_out_what_is_held_goes_out_and_a_later_result_follows_as_it_is_decided():
    delivery = await feed(*accepted(A), *accepted(B), decision(A, "APPROVED"))
    outcome = await _first_report_outcome()
    assert [(t.name, t.due_at) for t in outcome.timers] == [(bundles.HOLD_TIMER, T0 + bundles.HOLD)]
    await feed(hold_ran_out(), delivery=delivery)
    assert delivery.dispatched(A)
    assert not delivery.dispatched(B)
    release = next(e for e in delivery.written if e.event_type == topics.BUNDLE_RESULTS_RELEASED_EVENT)
    assert (release.payload["complete"], release.payload["outcomes"]) == (False, {A: "APPROVED"})
    assert not delivery.finished[bundles.key(BUNDLE)]
    await feed(decision(B, "APPROVED"), delivery=delivery)
    assert delivery.dispatched(B)
    assert delivery.finished[bundles.key(BUNDLE)]
    assert delivery.types(A).count(topics.POSTAL_DISPATCH_EVENT) == 1


async def _first_report_outcome() -> Outcome:
    """The bundle's outcome for its first settled application: the hold starts."""
    report = {"application_id": A, "bundle_id": BUNDLE, "applications": [B, A], "outcome": "APPROVED", "held": True,
              "settled_at": T0}
    return await delivery_handlers()[topics.BUNDLE_MEMBER_DECIDED_EVENT](
        Event("first", topics.BUNDLE_MEMBER_DECIDED_EVENT, bundles.key(BUNDLE), report, {"occurred_at": T0},
              topics.APPLICATION_DECIDED), None)


async def test_a_hold_that_runs_out_after_the_bundle_is_complete_changes_nothing():
    delivery = await feed(*accepted(A), *accepted(B), decision(A, "APPROVED"), decision(B, "APPROVED"))
    written = len(delivery.written)
    outcome = await delivery.handle(*hold_ran_out())
    assert outcome.emits == []
    assert len(delivery.written) == written


# ---------------------------------------------------------------------------- wiring

def test_delivery_reads_its_bundles_events_back_keyed_by_the_bundle():
    assert topics.APPLICATION_DECIDED in handlers.inputs([])
    report = Event("r", topics.BUNDLE_MEMBER_DECIDED_EVENT, A, {"bundle_id": BUNDLE}, {}, topics.APPLICATION_DECIDED)
    assert KEYS[topics.BUNDLE_MEMBER_DECIDED_EVENT](report) == f"bundle:{BUNDLE}"
    assert topics.BUNDLE_RESULTS_RELEASED_EVENT not in KEYS, "a release is for the application's own file"
