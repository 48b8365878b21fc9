"""一件事一次办 through routing's real handlers: a bundle's applications are held until its
matters are all in, then routed together; one that cannot be routed sends them all to
review; applications that make up no bundle, or whose other matters never come, go to
review too. Routing reads its own BundleMemberHeld / BundleReleased back, re-keyed as its
wiring says; `settle` plays that part of the runtime. No broker."""

from datetime import UTC, datetime, timedelta

from services.routing import bundles, handlers
from services.routing.domain import Catalogue, PartnerRegistry
from tongban import topics
from tongban.handling import Emit, Event, Outcome
from tongban.workdays import WorkingCalendar

RULES = (Catalogue.load(), PartnerRegistry.load(), WorkingCalendar.load())
MONDAY = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
BUNDLE = "TBBUNDLE1"
RETIREMENT = ("KSTB-HPF-02", "KSTB-SOC-04")  # 退休一件事


def received(application_id: str, matter: str, bundle_id: str = BUNDLE, **changes) -> dict:
    return {"application_id": application_id, "matter_code": matter, "channel": "PORTAL",
            "receiving_division": "430102", "home_division": "440103",
            "applicant": {"kind": "PERSON", "name": "示例", "id_number": "420106198506123410", "phone": None},
            "materials": [], "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": MONDAY,
            "window_id": "", "places": {}, "bundle_id": bundle_id, **changes}


class Routing:
    """Routing's handlers with their state per key, fed what it reads of its own output."""

    def __init__(self) -> None:
        self.handlers = handlers.make_handlers(*RULES)
        self.keys = handlers.keys()
        self.states: dict[str, dict] = {}
        self.emitted: list[Emit] = []
        self.outcomes: dict[str, Outcome] = {}

    async def settle(self, event_type: str, payload: dict, key: str, at: datetime = MONDAY) -> None:
        """Handle one input and everything routing reads back of what it emits, in order."""
        queue = [(event_type, payload, key)]
        while queue:
            event_type, payload, key = queue.pop(0)
            event = Event(f"id-{len(self.emitted)}-{event_type}", event_type, key, payload, {"occurred_at": at}, "t")
            if event_type in self.keys:
                key = self.keys[event_type](event)
                event = Event(event.event_id, event_type, key, payload, event.envelope, "t")
            outcome = await self.handlers[event_type](event, self.states.get(key))
            # the runtime derives each emit's id from the input's, its type and its qualifier
            ids = [(e.event_type, e.qualifier) for e in outcome.emits]
            assert len(set(ids)) == len(ids), f"two emits of one input would share an event id: {ids}"
            if outcome.state is not None:
                self.states[key] = outcome.state
            self.outcomes[key] = outcome
            self.emitted += outcome.emits
            queue += [(e.event_type, e.payload, e.key) for e in outcome.emits
                      if e.topic == topics.APPLICATION_ROUTED and e.event_type in self.handlers]

    def events(self, event_type: str, key: str | None = None) -> list[dict]:
        return [e.payload for e in self.emitted if e.event_type == event_type and key in (None, e.key)]


async def test_a_bundle_s_applications_wait_for_each_other_and_are_routed_together():
    routing = Routing()
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBA1", RETIREMENT[1]), "TBA1")
    [held] = routing.events(topics.BUNDLE_MEMBER_HELD_EVENT)
    assert (held["bundle_id"], held["routable"]) == (BUNDLE, True)
    assert not routing.events(topics.APPLICATION_ROUTED_EVENT), "not routed while the bundle waits"
    waiting = routing.outcomes[bundles.key(BUNDLE)]
    assert [(t.name, t.due_at) for t in waiting.timers] == [(bundles.WAIT_TIMER, MONDAY + bundles.WAIT)]

    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBA2", RETIREMENT[0]), "TBA2")
    released = routing.events(topics.BUNDLE_RELEASED_EVENT)
    assert sorted(r["application_id"] for r in released) == ["TBA1", "TBA2"]
    assert {(r["bundle_code"], tuple(r["applications"]), r["release"]) for r in released} == {
        ("BUNDLE-RETIREMENT", ("TBA2", "TBA1"), "ROUTE")}  # in the catalogue bundle's order of matters
    # each release is its application's own: what follows is sealed for partners bound to it
    assert all(e.correlation_id == e.key for e in routing.emitted if e.event_type == topics.BUNDLE_RELEASED_EVENT)
    routed = routing.events(topics.APPLICATION_ROUTED_EVENT)
    assert sorted((r["application_id"], r["matter_code"], r["deciding_partner"]) for r in routed) == [
        ("TBA1", "KSTB-SOC-04", "440000"), ("TBA2", "KSTB-HPF-02", "440000")]
    assert all("ledger" in routing.states[a] for a in ("TBA1", "TBA2")), "each application's clock runs"
    bundle = routing.outcomes[bundles.key(BUNDLE)]
    assert bundle.finished
    assert bundle.cancel_timers == [bundles.WAIT_TIMER]


async def test_one_application_no_rule_routes_sends_the_whole_bundle_to_review_with_the_reason():
    routing = Routing()
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBB1", RETIREMENT[0]), "TBB1")
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT,
                         received("TBB2", RETIREMENT[1], home_division="370102"), "TBB2")  # 济南: not from Changsha
    assert not routing.events(topics.APPLICATION_ROUTED_EVENT), "no matter of the bundle runs alone"
    review = routing.events(topics.APPLICATION_UNDER_REVIEW_EVENT)
    assert sorted(r["application_id"] for r in review) == ["TBB1", "TBB2"]
    assert all(r["reason"].startswith("bundle BUNDLE-RETIREMENT: KSTB-SOC-04 cannot be routed: ") for r in review)
    assert "review" in routing.states["TBB1"], "an operator may re-route it"


async def test_matters_that_are_no_bundle_of_the_catalogue_go_to_review_at_once():
    routing = Routing()
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBC1", "KSTB-HPF-02"), "TBC1")
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBC2", "KSTB-MKT-01"), "TBC2")
    review = routing.events(topics.APPLICATION_UNDER_REVIEW_EVENT)
    assert sorted(r["application_id"] for r in review) == ["TBC1", "TBC2"]
    assert review[0]["reason"] == ("the matters applied for together (KSTB-HPF-02, KSTB-MKT-01) are not a bundle "
                                   "of the catalogue")


async def test_a_bundle_whose_other_matters_never_come_sends_what_came_to_review_when_its_wait_ends():
    routing = Routing()
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBD1", RETIREMENT[0]), "TBD1")
    fired = {"timer_id": "t", "name": bundles.WAIT_TIMER, "payload": {"bundle_id": BUNDLE}}
    await routing.settle(bundles.WAIT_TIMER, fired, bundles.key(BUNDLE), at=MONDAY + bundles.WAIT)
    [review] = routing.events(topics.APPLICATION_UNDER_REVIEW_EVENT, "TBD1")
    assert review["reason"] == "the bundle's other matters did not arrive within 1 day(s) (arrived: KSTB-HPF-02)"
    # the missing matter arriving later is not routed alone either
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBD2", RETIREMENT[1]), "TBD2",
                         at=MONDAY + bundles.WAIT + timedelta(hours=1))
    [late] = routing.events(topics.APPLICATION_UNDER_REVIEW_EVENT, "TBD2")
    assert late["reason"] == f"bundle {BUNDLE} was released before this application arrived"
    assert not routing.events(topics.APPLICATION_ROUTED_EVENT)


async def test_a_redelivered_member_and_a_withdrawn_one_change_nothing_for_the_bundle():
    routing = Routing()
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBE1", RETIREMENT[0]), "TBE1")
    [held] = routing.events(topics.BUNDLE_MEMBER_HELD_EVENT)
    await routing.settle(topics.BUNDLE_MEMBER_HELD_EVENT, held, "TBE1")  # redelivered
    assert len(routing.states[bundles.key(BUNDLE)]["members"]) == 1
    await routing.settle(topics.APPLICATION_WITHDRAWN_EVENT,
                         {"application_id": "TBE1", "reason": "", "withdrawn_at": MONDAY}, "TBE1")
    assert routing.outcomes["TBE1"].finished
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBE2", RETIREMENT[1]), "TBE2")
    routed = routing.events(topics.APPLICATION_ROUTED_EVENT)
    assert [r["application_id"] for r in routed] == ["TBE2"], "the withdrawn application is not routed"


async def test_an_application_outside_any_bundle_is_routed_at_once_as_before():
    routing = Routing()
    await routing.settle(topics.APPLICATION_RECEIVED_EVENT, received("TBF1", RETIREMENT[0], bundle_id=""), "TBF1")
    assert [r["application_id"] for r in routing.events(topics.APPLICATION_ROUTED_EVENT)] == ["TBF1"]
    assert not routing.events(topics.BUNDLE_MEMBER_HELD_EVENT)
