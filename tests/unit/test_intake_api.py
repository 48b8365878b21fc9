"""Intake's gRPC API, in-process over mutual TLS with the runtime stand-in of
test_intake_api_auth: the formal check's field violations, a retried key with another
payload, application numbers, Track's view, withdrawal, 补正 and Watch."""

import secrets
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from test_intake_api_auth import InstantRuntime, tls  # noqa: F401 (a fixture)

from services.intake import domain, handlers, intake_pb2, intake_pb2_grpc
from services.intake.api import IntakeServicer
from services.intake.catalogue import LearnedCatalogue
from sim.samples import samples, with_wrong_check_digit
from tongban.events import now_utc
from tongban.grpc_tls import client_channel, server_credentials
from tongban.handling import Event
from tongban.sharing.access import Consultation

PORTAL = "hunan-portal"


class Catalogue:
    """A catalogue of one matter, for a company, online or at a window."""

    def matter(self, code: str) -> domain.MatterForm | None:
        if code != "KSTB-MKT-01":
            return None
        return domain.MatterForm("COMPANY", ("FULLY_ONLINE", "RECEIVE_HERE_HANDLE_THERE"),
                                 frozenset({"APPLICATION_FORM", "ARTICLES"}), frozenset({"PREMISES_PROOF"}),
                                 committable=frozenset({"ARTICLES"}))


class Windows:
    """One window, authorised for one matter in its own county."""

    def may_receive(self, window_id: str, matter_code: str, division: str) -> bool:
        return (window_id, matter_code, division[:6]) == ("HN-430103-KSTB-01", "KSTB-MKT-01", "430103")


TLS_DIR: list = []
CONSULTED = Consultation("tongban-verification", "REAL_NAME_IDENTITY", "verify the applicant's identity",
                         "《个人信息保护法》第十三条", 1_764_000_000_000, "MATCH")


class AccessLog:
    """The exchange's audit trail for the applications asked about; down when told to be."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.down = False

    async def __call__(self, application_id: str) -> list[Consultation]:
        self.asked.append(application_id)
        if self.down:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "connect failed to 127.0.0.1:50161 (provider internals)")
        return [CONSULTED]


ACCESS_LOG = AccessLog()


@pytest.fixture
async def intake(tls):  # noqa: F811
    TLS_DIR[:] = [tls[0]]
    runtime = InstantRuntime()
    server = grpc.aio.server()
    ACCESS_LOG.asked.clear()
    ACCESS_LOG.down = False
    intake_pb2_grpc.add_IntakeServicer_to_server(IntakeServicer(runtime, Catalogue(), Windows(), ACCESS_LOG), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls[0], "intake"))
    await server.start()

    async def call(method: str, message, caller: str = PORTAL):
        async with client_channel(f"127.0.0.1:{port}", caller, tls[0]) as channel:
            return await getattr(intake_pb2_grpc.IntakeStub(channel), method)(message, timeout=5)

    yield call, runtime, port
    await server.stop(None)


def company_at_window() -> intake_pb2.SubmitRequest:
    """公司设立登记 at the Changsha window: complete for the catalogue above."""
    request = intake_pb2.SubmitRequest()
    request.CopyFrom(next(s.request for s in samples(secrets.token_hex(4)) if "公司设立登记" in s.title))
    request.source_system = ""
    return request


async def refused(call, method: str, message) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(method, message)
    return error.value


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    [detail] = status.details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


# ---------------------------------------------------------------------------- the formal check

async def test_a_complete_submission_gets_its_id_and_a_printable_number(intake):
    call, runtime, _ = intake
    reply = await call("Submit", company_at_window())
    assert reply.application_id.startswith("TB")
    assert domain.is_valid_number(reply.application_number)
    assert reply.application_number.startswith("430103-")
    kinds = [k for k, _ in runtime.commands]
    assert kinds == [handlers.SUBMIT, handlers.NUMBER]


async def test_every_problem_comes_back_at_once_as_a_field_violation_naming_the_field_never_the_value(intake):
    call, runtime, _ = intake
    request = company_at_window()
    request.applicant.id_number = with_wrong_check_digit(request.applicant.id_number)
    request.home_division = "999999"
    request.window_id = "HN-430102-KSTB-01"  # another county's window
    del request.materials[3]  # ARTICLES, essential
    request.deferred_materials["APPLICATION_FORM"] = "2026-12-20"  # essential: cannot follow later
    error = await refused(call, "Submit", request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(error)
    assert sorted(found) == ["applicant.id_number", "deferred_materials", "home_division", "materials", "window_id"]
    assert "GB 32100" in found["applicant.id_number"]
    assert "ARTICLES" in found["materials"]
    assert request.applicant.id_number not in error.details()
    assert request.applicant.name not in error.details()
    assert runtime.commands == []


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda r: setattr(r, "window_id", "HN-430104-KSTB-01"), "window_id", "not authorised"),  # another county's
    (lambda r: r.commitments.append("APPLICATION_FORM"), "commitments", "no written commitment may replace"),
    (lambda r: setattr(r.applicant, "kind", "PERSON"), "applicant.kind", "for a COMPANY"),
    (lambda r: setattr(r, "window_id", ""), "window_id", "required for the WINDOW channel"),
    (lambda r: setattr(r, "receiving_division", "430199"), "receiving_division", "not a division in GB/T 2260"),
    (lambda r: r.deferred_materials.update({"PREMISES_PROOF": "next week"}), "deferred_materials[PREMISES_PROOF]",
     "YYYY-MM-DD"),
])
async def test_each_formal_rule_names_its_field(intake, change, field, words):
    call, _, _ = intake
    request = company_at_window()
    change(request)
    error = await refused(call, "Submit", request)
    found = violations(error)
    assert field in found, found
    assert words in found[field]


async def test_optional_materials_may_follow_later_and_a_commitment_replaces_an_essential_one(intake):
    call, runtime, _ = intake
    request = company_at_window()
    del request.materials[2:4]  # PREMISES_PROOF (optional), ARTICLES (essential)
    request.deferred_materials["PREMISES_PROOF"] = "2026-12-20"
    request.commitments.append("ARTICLES")
    reply = await call("Submit", request)
    [published] = [e for e in runtime.published if e.event_type == "tongban.application.ApplicationReceived"]
    assert (published.payload["commitments"], published.payload["deferred_materials"]) == (
        ["ARTICLES"], {"PREMISES_PROOF": "2026-12-20"})
    assert published.payload["application_number"] == reply.application_number


# ---------------------------------------------------------------------------- idempotency

async def test_the_same_key_and_payload_is_the_same_application_and_number(intake):
    call, runtime, _ = intake
    request = company_at_window()
    first, again = await call("Submit", request), await call("Submit", request)
    assert (first.application_id, first.application_number) == (again.application_id, again.application_number)
    assert [k for k, _ in runtime.commands] == [handlers.SUBMIT, handlers.NUMBER]


async def test_the_same_key_with_another_payload_is_already_exists_naming_the_fields_not_the_values(intake):
    call, runtime, _ = intake
    request = company_at_window()
    await call("Submit", request)
    request.applicant.phone = "13911112222"
    request.postal_address = "另一个地址"
    error = await refused(call, "Submit", request)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error.details().endswith("differs in: applicant.phone, postal_address")
    assert "13911112222" not in error.details()
    assert "另一个地址" not in error.details()
    assert len(runtime.commands) == 2


def test_fingerprints_name_what_differs_and_do_not_keep_a_value():
    kept = domain.fingerprints("TB1", {"applicant.id_number": "420106198506123410", "channel": "PORTAL"})
    assert "420106198506123410" not in repr(kept)
    assert all(len(d) == 6 for d in kept.values())
    fresh = domain.fingerprints("TB1", {"applicant.id_number": "420106198506123429", "channel": "PORTAL"})
    assert domain.differing(kept, fresh) == ["applicant.id_number"]
    assert domain.fingerprints("TB2", {"channel": "PORTAL"}) != domain.fingerprints("TB1", {"channel": "PORTAL"})


# ---------------------------------------------------------------------------- Track, Withdraw, 补正

async def test_track_shows_the_number_who_acts_next_the_next_step_and_the_receipt(intake):
    call, _, _ = intake
    reply = await call("Submit", company_at_window())
    progress = await call("Track", intake_pb2.TrackRequest(application_id=reply.application_id))
    assert progress.application_number == reply.application_number
    assert progress.responsible == "RECEIVING_WINDOW"
    assert progress.next_step
    assert [n.kind for n in progress.notices] == ["RECEIPT"]
    assert [(h.sequence, h.stage, h.notice) for h in progress.history] == [(1, "RECEIVED", ""),
                                                                          (2, "NUMBERED", "RECEIPT")]


async def test_the_applicant_sees_who_consulted_their_records_and_why(intake):
    call, _, _ = intake
    application_id = (await call("Submit", company_at_window())).application_id
    reply = await call("Consultations", intake_pb2.TrackRequest(application_id=application_id))
    assert reply.application_id == application_id
    assert [(c.requester, c.evidence_type, c.purpose, c.legal_basis, c.at_millis, c.answer)
            for c in reply.consultations] == [("tongban-verification", "REAL_NAME_IDENTITY",
                                               "verify the applicant's identity", "《个人信息保护法》第十三条",
                                               1_764_000_000_000, "MATCH")]
    assert ACCESS_LOG.asked == [application_id]


async def test_consultations_are_for_those_who_may_track_and_say_plainly_when_the_exchange_is_down(intake):
    call, _, port = intake
    application_id = (await call("Submit", company_at_window())).application_id
    async with client_channel(f"127.0.0.1:{port}", "changsha-window", TLS_DIR[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await intake_pb2_grpc.IntakeStub(channel).Consultations(
                intake_pb2.TrackRequest(application_id=application_id), timeout=5)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ACCESS_LOG.asked == [], "nothing is asked of the exchange for a caller who may not see it"
    unknown = await refused(call, "Consultations", intake_pb2.TrackRequest(application_id="TB-no-such"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    ACCESS_LOG.down = True
    down = await refused(call, "Consultations", intake_pb2.TrackRequest(application_id=application_id))
    assert (down.code(), down.details()) == (grpc.StatusCode.UNAVAILABLE, "the data-sharing exchange cannot answer now")


async def test_a_counter_key_is_not_an_application(intake):
    call, _, _ = intake
    await call("Submit", company_at_window())
    error = await refused(call, "Track", intake_pb2.TrackRequest(application_id="numbering:00"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def deliver_event(runtime: InstantRuntime, application_id: str, event_type: str, payload: dict) -> None:
    await runtime._apply(handlers.HANDLERS[event_type], Event(
        f"{event_type}-{len(runtime.commands)}", event_type, application_id, payload,
        {"occurred_at": now_utc(), "correlation_id": application_id}, "test"))


async def test_an_application_is_withdrawn_once_and_not_after_the_decision(intake):
    call, runtime, _ = intake
    withdrawn = (await call("Submit", company_at_window())).application_id
    reply = await call("Withdraw", intake_pb2.WithdrawRequest(application_id=withdrawn, reason="不需要了"))
    assert reply.stage == "WITHDRAWN"
    assert runtime.states[withdrawn]["stage"] == "WITHDRAWN"
    error = await refused(call, "Withdraw", intake_pb2.WithdrawRequest(application_id=withdrawn))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    request = company_at_window()
    decided = (await call("Submit", request)).application_id
    await deliver_event(runtime, decided, "tongban.application.ApplicationDecided", {
        "application_id": decided, "deciding_partner": "440000", "outcome": "APPROVED",
        "result_reference": "LIC-9", "reason": None, "decided_at": now_utc()})
    error = await refused(call, "Withdraw", intake_pb2.WithdrawRequest(application_id=decided))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "until the decision" in error.details()


async def test_materials_are_supplemented_while_a_notice_is_open_and_a_retry_is_the_same_supplement(intake):
    call, runtime, _ = intake
    application_id = (await call("Submit", company_at_window())).application_id
    supplement = intake_pb2.SupplementRequest(application_id=application_id,
                                              materials=[intake_pb2.Material(code="ARTICLES", provided=True)])
    error = await refused(call, "SupplementMaterials", supplement)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    await deliver_event(runtime, application_id, "tongban.application.SupplementRequested", {
        "application_id": application_id, "deciding_partner": "440000", "cause": "",
        "missing_materials": {"ARTICLES": "未签字"}, "requested_at": now_utc(),
        "supplement_by": now_utc() + timedelta(days=5)})
    progress = await call("Track", intake_pb2.TrackRequest(application_id=application_id))
    assert (progress.stage, progress.responsible) == ("SUPPLEMENT_REQUESTED", "APPLICANT")
    assert progress.deadline_millis > 0
    assert progress.notices[-1].kind == "SUPPLEMENT"
    assert list(progress.notices[-1].reasons) == ["ARTICLES: 未签字"]
    assert (await call("SupplementMaterials", supplement)).stage == "SUPPLEMENTED"
    [(_, command_id)] = [(k, c) for k, c in runtime.command_ids if k == handlers.SUPPLEMENT]
    assert command_id == f"supplement:{application_id}:1"


# ---------------------------------------------------------------------------- Watch

ROUTED = "tongban.application.ApplicationRouted"


def routed(application_id: str) -> dict:
    return {"application_id": application_id, "matter_code": "KSTB-MKT-01", "mode": "RECEIVE_HERE_HANDLE_THERE",
            "deciding_partner": "440000", "deciding_division": "440300", "legs": [], "promised_working_days": 3,
            "due_at": now_utc() + timedelta(days=3)}


async def test_watch_streams_each_step_as_it_happens_and_resumes_after_a_given_point(intake):
    call, runtime, port = intake
    application_id = (await call("Submit", company_at_window())).application_id
    async with client_channel(f"127.0.0.1:{port}", PORTAL, TLS_DIR[0]) as channel:
        stream = intake_pb2_grpc.IntakeStub(channel).Watch(
            intake_pb2.WatchRequest(application_id=application_id), timeout=10)
        first = [await stream.read(), await stream.read()]
        assert [(s.sequence, s.stage) for s in first] == [(1, "RECEIVED"), (2, "NUMBERED")]
        await deliver_event(runtime, application_id, ROUTED, routed(application_id))  # while the stream is open
        live = await stream.read()
        assert (live.sequence, live.stage, live.responsible) == (3, "ROUTED", "DECIDING_AUTHORITY:440000")
        stream.cancel()
    await deliver_event(runtime, application_id, "tongban.application.ApplicationDecided", {
        "application_id": application_id, "deciding_partner": "440000", "outcome": "DENIED",
        "result_reference": None, "reason": "不符合法定条件", "decided_at": now_utc()})
    async with client_channel(f"127.0.0.1:{port}", PORTAL, TLS_DIR[0]) as channel:
        rest = [s async for s in intake_pb2_grpc.IntakeStub(channel).Watch(
            intake_pb2.WatchRequest(application_id=application_id, after_sequence=3), timeout=10)]
    assert [(s.sequence, s.stage, s.notice) for s in rest] == [(4, "DENIED", "DENIAL")], "ends once concluded"


async def test_watch_is_for_those_who_may_track(intake):
    call, _, port = intake
    application_id = (await call("Submit", company_at_window())).application_id
    async with client_channel(f"127.0.0.1:{port}", "changsha-window", TLS_DIR[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            _ = [s async for s in intake_pb2_grpc.IntakeStub(channel).Watch(
                intake_pb2.WatchRequest(application_id=application_id), timeout=10)]
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------------- the learned catalogue

MATTER_V2 = {"matter_code": "KSTB-MKT-01", "modes": ["RECEIVE_HERE_HANDLE_THERE"], "subject": "COMPANY",
             "change": "ADDED", "materials": [
                 {"code": "APPLICATION_FORM", "name": "申请书", "essential": True, "commitment": False,
                  "shared_evidence": ""},
                 {"code": "ARTICLES", "name": "章程", "essential": True, "commitment": True, "shared_evidence": ""},
                 {"code": "PREMISES_PROOF", "name": "住所证明", "essential": False, "commitment": False,
                  "shared_evidence": ""}]}


def test_the_catalogue_is_learned_from_matter_changes_and_forgets_a_withdrawn_matter():
    learned = LearnedCatalogue()
    learned.learn(MATTER_V2)
    assert learned.matter("KSTB-MKT-01") == domain.MatterForm(
        "COMPANY", ("RECEIVE_HERE_HANDLE_THERE",), frozenset({"APPLICATION_FORM", "ARTICLES"}),
        frozenset({"PREMISES_PROOF"}), frozenset({"ARTICLES"}))
    learned.learn({**MATTER_V2, "change": "WITHDRAWN"})
    assert learned.matter("KSTB-MKT-01") is None


def test_a_v1_matter_change_checks_mode_but_not_materials():
    learned = LearnedCatalogue()
    learned.learn({"matter_code": "KSTB-MED-01", "modes": ["RECEIVE_HERE_HANDLE_THERE"], "change": "ADDED"})
    sub = domain.Submission(matter_code="KSTB-MED-01", channel="PORTAL", receiving_division="430102",
                            home_division="420106", applicant_kind="PERSON", applicant_name="x",
                            applicant_id_number="420106198506123410", materials=("ANYTHING",),
                            delivery_method="ELECTRONIC", postal_address=None)
    assert domain.form_problems(sub, learned, None) == [
        "channel: the matter cannot be handled fully online; apply at a window"]


def test_a_matter_the_catalogue_copy_does_not_list_is_left_to_routing():
    sub = domain.Submission(matter_code="KSTB-XXX-99", channel="PORTAL", receiving_division="430102",
                            home_division="420106", applicant_kind="PERSON", applicant_name="x",
                            applicant_id_number="420106198506123410", materials=("FORM",),
                            delivery_method="ELECTRONIC", postal_address=None)
    assert domain.form_problems(sub, LearnedCatalogue(), None) == []


async def test_a_retry_of_an_application_received_before_numbering_is_not_published_again(intake):
    call, runtime, _ = intake
    request = company_at_window()
    application_id = domain.application_id_for(PORTAL, request.client_reference)
    runtime.states[application_id] = domain.new_progress(application_id, request.matter_code, now_utc(), PORTAL,
                                                         "portal")
    reply = await call("Submit", request)
    assert (reply.application_id, reply.application_number) == (application_id, "")
    assert runtime.commands == []


@pytest.mark.parametrize("method", ["Track", "Consultations"])
async def test_an_empty_application_id_is_an_invalid_argument_on_every_instance(intake, method):
    """Not UNAVAILABLE: no instance owns the empty key, and a retry would never help."""
    call, _, _ = intake
    error = await refused(call, method, intake_pb2.TrackRequest(application_id=""))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "application_id is required")
