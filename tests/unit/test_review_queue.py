"""The review queue for unroutable work: routing's real handlers (the application's review,
the queue aggregate it feeds), its Review API over real gRPC with mutual TLS on a fake
runtime, and intake's view of an application under review."""

from datetime import UTC, datetime

import grpc
import pytest

from services.intake import handlers as intake
from services.routing import handlers, review, routing_pb2, routing_pb2_grpc
from services.routing.api import ReviewServicer
from services.routing.domain import Catalogue, PartnerRegistry
from services.routing.ledger import Ledger
from tongban import topics
from tongban.grpc_tls import client_channel, server_credentials
from tongban.handling import Event, Outcome, Rejected
from tongban.workdays import WorkingCalendar

APP = "TBREVIEW"
MONDAY = datetime(2025, 9, 22, 2, 0, tzinfo=UTC)
LATER = datetime(2025, 9, 23, 2, 0, tzinfo=UTC)
ID_NUMBER = "420106198506123417"
RULES = (Catalogue.load(), PartnerRegistry.load(), WorkingCalendar.load())
OPERATOR = "tongban-operator"


def rules() -> dict:
    return handlers.make_handlers(*RULES)


def received(**changes) -> dict:
    # 370102 (济南) takes only files received in 湘西: from Changsha no rule routes it
    return {"application_id": APP, "matter_code": "KSTB-MED-01", "channel": "PORTAL", "receiving_division": "430102",
            "home_division": "370102",
            "applicant": {"kind": "PERSON", "name": "示例", "id_number": ID_NUMBER, "phone": None},
            "materials": [], "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": MONDAY,
            **changes}


def event(event_type: str, payload: dict, key: str = APP, at: datetime = MONDAY, n: str = "1") -> Event:
    return Event(f"id-{n}", event_type, key, payload, {"occurred_at": at, "correlation_id": APP}, "t")


async def unroutable(**changes) -> Outcome:
    return await rules()[topics.APPLICATION_RECEIVED_EVENT](
        event(topics.APPLICATION_RECEIVED_EVENT, received(**changes)), None)


def command(name: str, **payload) -> Event:
    return event(name, {"operator": OPERATOR, "reason": "", **payload}, at=LATER, n=f"{name}:{APP}")


# ---------------------------------------------------------------------------- the application's review

async def test_an_unroutable_application_waits_for_review_with_what_a_reroute_needs_and_nothing_personal():
    outcome = await unroutable(home_division=ID_NUMBER)  # an ID number typed into a division
    [emit] = outcome.emits
    assert (emit.event_type, emit.payload["matter_code"]) == (topics.APPLICATION_UNDER_REVIEW_EVENT, "KSTB-MED-01")
    assert not outcome.finished
    kept = outcome.state["review"]
    assert (kept["matter_code"], kept["channel"], kept["receiving_division"]) == ("KSTB-MED-01", "PORTAL", "430102")
    assert kept["home_division"] == ""
    assert ID_NUMBER not in repr(outcome.state)
    assert "示例" not in repr(outcome.state)


async def test_a_matter_not_in_the_catalogue_is_refused_at_once_since_no_operator_could_route_it():
    outcome = await unroutable(matter_code="KSTB-NOPE-99")
    [emit] = outcome.emits
    assert emit.event_type == topics.APPLICATION_UNROUTABLE_EVENT
    assert emit.payload == {"application_id": APP, "matter_code": "KSTB-NOPE-99",
                            "reason": "matter code is not in the catalogue"}
    assert outcome.state == {"unroutable": "matter code is not in the catalogue"}
    assert outcome.finished
    queue_inputs = handlers.keys()
    assert emit.event_type not in queue_inputs  # never listed


async def test_an_operator_reroutes_to_a_named_authority_and_the_sla_ledger_starts_from_receipt():
    waiting = (await unroutable()).state
    outcome = await rules()[handlers.REROUTE](command(handlers.REROUTE, deciding_partner="420000",
                                                        reason="业务协同"), waiting)
    routed, resolved = outcome.emits[0], outcome.emits[-1]
    assert routed.event_type == topics.APPLICATION_ROUTED_EVENT
    assert (routed.payload["deciding_partner"], routed.payload["deciding_division"], routed.payload["mode"]) == (
        "420000", "420000", "FULLY_ONLINE")
    assert [leg["step"] for leg in routed.payload["legs"]] == ["DECIDE"]
    assert (resolved.event_type, resolved.payload["resolution"], resolved.payload["operator"]) == (
        topics.REVIEW_RESOLVED_EVENT, review.REROUTED, OPERATOR)
    assert "review" not in outcome.state
    ledger = Ledger.from_state(outcome.state["ledger"])
    assert ledger.submitted_on == MONDAY.date()  # 收件 was Monday, whenever the operator acted
    assert not outcome.finished
    # the lifecycle goes on from there
    accepted = await rules()[topics.APPLICATION_ACCEPTED_EVENT](
        event(topics.APPLICATION_ACCEPTED_EVENT, {"application_id": APP, "deciding_partner": "420000",
                                                  "accepted_at": LATER}, n="2"), outcome.state)
    assert Ledger.from_state(accepted.state["ledger"]).clock("DECISION").status == "RUNNING"


@pytest.mark.parametrize(("matter", "partner", "why"), [
    ("KSTB-MED-01", "999999", "not a partner under an agreement"),
    ("KSTB-SOC-01", "440000", "joint matter's legs follow its places"),  # 多地联办: no one authority decides it
    ("KSTB-NOPE-99", "420000", "can only be rejected"),  # the catalogue dropped it while it waited
])
async def test_a_reroute_the_catalogue_or_registry_does_not_permit_is_refused(matter, partner, why):
    waiting = (await unroutable()).state
    waiting = {"review": {**waiting["review"], "matter_code": matter}}
    with pytest.raises(Rejected, match=why):
        await rules()[handlers.REROUTE](command(handlers.REROUTE, deciding_partner=partner), waiting)


async def test_only_an_application_under_review_can_be_rerouted_or_rejected():
    routed = (await rules()[topics.APPLICATION_RECEIVED_EVENT](
        event(topics.APPLICATION_RECEIVED_EVENT, received(home_division="420106")), None)).state
    for name, payload in ((handlers.REROUTE, {"deciding_partner": "420000"}), (handlers.REJECT, {"reason": "x"})):
        for state in (None, routed):
            with pytest.raises(Rejected, match="not in the review queue"):
                await rules()[name](command(name, **payload), state)


async def test_an_operator_rejects_with_a_reason_and_the_application_ends():
    waiting = (await unroutable()).state
    with pytest.raises(Rejected, match="needs a reason"):
        await rules()[handlers.REJECT](command(handlers.REJECT, reason="  "), waiting)
    with pytest.raises(Rejected, match="at most 500"):
        await rules()[handlers.REJECT](command(handlers.REJECT, reason="长" * 501), waiting)
    # the operator's words travel unsealed: an ID number typed into them is scrubbed
    scrubbed = await rules()[handlers.REJECT](command(handlers.REJECT, reason=f"申请人 {ID_NUMBER} 不符"), waiting)
    assert ID_NUMBER not in repr(scrubbed.emits)
    outcome = await rules()[handlers.REJECT](command(handlers.REJECT, reason="事项不属跨省通办范围"), waiting)
    rejected, resolved = outcome.emits
    assert (rejected.event_type, rejected.payload["reason"]) == (
        topics.APPLICATION_UNROUTABLE_EVENT, "rejected on review: 事项不属跨省通办范围")
    assert (resolved.payload["resolution"], resolved.payload["reason"]) == (review.REJECTED, "事项不属跨省通办范围")
    assert outcome.finished


async def test_a_withdrawal_under_review_takes_it_out_of_the_queue():
    waiting = (await unroutable()).state
    outcome = await rules()[topics.APPLICATION_WITHDRAWN_EVENT](
        event(topics.APPLICATION_WITHDRAWN_EVENT, {"application_id": APP, "reason": "", "withdrawn_at": LATER}, n="w"),
        waiting)
    assert [(e.event_type, e.payload["resolution"]) for e in outcome.emits] == [
        (topics.REVIEW_RESOLVED_EVENT, review.WITHDRAWN)]
    assert outcome.finished


# ---------------------------------------------------------------------------- the queue aggregate

async def test_the_queue_lists_what_waits_and_drops_what_is_resolved():
    keys = handlers.keys()
    queued = (await unroutable()).emits[0]
    as_event = event(queued.event_type, queued.payload, n="q")
    assert keys[topics.APPLICATION_UNDER_REVIEW_EVENT](as_event) == review.QUEUE
    queue = (await rules()[queued.event_type](event(queued.event_type, queued.payload, review.QUEUE, n="q"),
                                              None)).state
    other = {**queued.payload, "application_id": "TBOTHER"}
    queue = (await rules()[queued.event_type](event(queued.event_type, other, review.QUEUE, n="o"), queue)).state
    assert sorted(queue["entries"]) == ["TBOTHER", APP]
    assert queue["entries"][APP]["reason"] == queued.payload["reason"]
    # a rejection's ReviewResolved takes the entry out
    waiting = (await unroutable()).state
    resolved = (await rules()[handlers.REJECT](command(handlers.REJECT, reason="r"), waiting)).emits[-1]
    assert keys[topics.REVIEW_RESOLVED_EVENT](event(resolved.event_type, resolved.payload)) == review.QUEUE
    queue = (await rules()[resolved.event_type](event(resolved.event_type, resolved.payload, review.QUEUE, n="x"),
                                                queue)).state
    assert sorted(queue["entries"]) == ["TBOTHER"]


# ---------------------------------------------------------------------------- intake's view

async def test_intake_shows_the_application_under_review_and_it_moves_on_once_rerouted():
    queued = (await unroutable()).emits[0]
    view = (await intake.on_under_review(event(queued.event_type, queued.payload, n="u"), None)).state
    assert (view["stage"], view["terminal"], view["history"][-1]["stage"]) == ("", False, "UNDER_REVIEW")
    waiting = (await unroutable()).state
    routed = (await rules()[handlers.REROUTE](command(handlers.REROUTE, deciding_partner="420000"),
                                              waiting)).emits[0]
    view = (await intake.on_routed(event(routed.event_type, routed.payload, at=LATER, n="r"), view)).state
    assert (view["stage"], view["terminal"]) == ("ROUTED", False)
    rejection = (await rules()[handlers.REJECT](command(handlers.REJECT, reason="r"), waiting)).emits[0]
    ended = (await intake.on_unroutable(event(rejection.event_type, rejection.payload, n="j"), view)).state
    assert (ended["stage"], ended["terminal"]) == ("REJECTED", True)


# ---------------------------------------------------------------------------- the Review API

class FakeRuntime:
    """What the servicer asks of the runtime: committed state by key, and commands."""

    def __init__(self, states: dict[str, dict]) -> None:
        self.states = states
        self.submitted: list[tuple] = []

    async def state_of(self, key: str) -> dict | None:
        return self.states.get(key)

    async def trace_of(self, key: str) -> dict[str, str]:
        return {}

    async def submit(self, command_type: str, key: str, command_id: str, payload: dict) -> None:
        self.submitted.append((command_type, key, command_id, payload))


@pytest.fixture
async def api(tls):
    waiting = (await unroutable()).state
    queued = (await unroutable()).emits[0]
    queue = (await rules()[queued.event_type](event(queued.event_type, queued.payload, review.QUEUE), None)).state
    runtime = FakeRuntime({APP: waiting, review.QUEUE: queue})
    commands = {name: handler for name, handler in rules().items() if name in handlers.COMMANDS}
    server = grpc.aio.server()
    routing_pb2_grpc.add_ReviewServicer_to_server(ReviewServicer(runtime, commands), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, "routing"))
    await server.start()
    yield f"127.0.0.1:{port}", runtime
    await server.stop(None)


async def call(api, tls, method: str, message, caller: str = OPERATOR):
    async with client_channel(api[0], caller, tls) as channel:
        return await getattr(routing_pb2_grpc.ReviewStub(channel), method)(message, timeout=5)


async def test_an_operator_lists_the_queue(api, tls):
    reply = await call(api, tls, "ListUnroutable", routing_pb2.ListUnroutableRequest())
    [entry] = reply.entries
    assert (entry.application_id, entry.matter_code) == (APP, "KSTB-MED-01")
    assert entry.reason.startswith("no partner agreement covers")
    assert entry.since_millis == int(MONDAY.timestamp() * 1000)


async def test_a_reroute_is_handed_to_the_owner_as_a_command_with_the_operator_named(api, tls):
    await call(api, tls, "Reroute", routing_pb2.RerouteRequest(application_id=APP, deciding_partner="420000"))
    assert api[1].submitted == [(handlers.REROUTE, APP, f"reroute:{APP}",
                                 {"deciding_partner": "420000", "reason": "", "operator": OPERATOR})]


@pytest.mark.parametrize(("method", "message", "code"), [
    ("Reroute", routing_pb2.RerouteRequest(application_id=APP, deciding_partner="999999"),
     grpc.StatusCode.FAILED_PRECONDITION),
    ("RejectUnroutable", routing_pb2.RejectUnroutableRequest(application_id=APP), grpc.StatusCode.FAILED_PRECONDITION),
    ("RejectUnroutable", routing_pb2.RejectUnroutableRequest(application_id="TBNONE", reason="r"),
     grpc.StatusCode.NOT_FOUND),
])
async def test_a_request_the_rules_refuse_writes_nothing(api, tls, method, message, code):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(api, tls, method, message)
    assert refused.value.code() == code
    assert api[1].submitted == []


@pytest.mark.parametrize("method", ["ListUnroutable", "Reroute", "RejectUnroutable"])
async def test_only_operators_may_use_the_review_queue(api, tls, method):
    message = {"ListUnroutable": routing_pb2.ListUnroutableRequest(),
               "Reroute": routing_pb2.RerouteRequest(application_id=APP, deciding_partner="420000"),
               "RejectUnroutable": routing_pb2.RejectUnroutableRequest(application_id=APP, reason="r")}[method]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(api, tls, method, message, caller="hunan-portal")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert api[1].submitted == []
