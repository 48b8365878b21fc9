"""RequestConsultation / RecordConsultation on intake's gRPC API, in-process over mutual TLS with
the runtime stand-in of test_intake_api_auth: who may call, the field violations, the
window binding, NOT_FOUND and FAILED_PRECONDITION; Track never answers for a consultation."""

import grpc
import pytest
from test_intake_api import refused, violations
from test_intake_api_auth import InstantRuntime, tls  # noqa: F401 (a fixture)

from services.intake import domain, handlers, intake_pb2, intake_pb2_grpc
from services.intake.api import IntakeServicer
from tongban import windows
from tongban.events import now_utc
from tongban.grpc_tls import client_channel, server_credentials
from tongban.handling import Event

WINDOW_SYSTEM = "changsha-window"
WINDOW = "HN-430104-KSTB-01"  # operated by changsha-window (tongban/windows.toml)
OTHERS_WINDOW = "HN-433101-KSTB-01"  # operated by another system


class Catalogue:
    def matter(self, code: str) -> domain.MatterForm | None:
        if code != "KSTB-SOC-02":
            return None
        return domain.MatterForm("PERSON", ("RECEIVE_HERE_HANDLE_THERE",), frozenset({"RESIDENT_ID", "PHOTO"}))


class KeyedRuntime(InstantRuntime):
    """The stand-in, with the runtime's re-keying (Wiring.keys) of what intake reads back."""

    async def _apply(self, handler, event: Event) -> None:
        if (key_of := handlers.KEYS.get(event.event_type)) is not None:
            event = Event(event.event_id, event.event_type, key_of(event), event.payload, event.envelope, event.topic)
        await super()._apply(handler, event)


@pytest.fixture
async def intake(tls):  # noqa: F811
    runtime = KeyedRuntime()
    server = grpc.aio.server()
    intake_pb2_grpc.add_IntakeServicer_to_server(IntakeServicer(runtime, Catalogue(), windows.registry()), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls[0], "intake"))
    await server.start()

    async def call(method: str, message, caller: str = WINDOW_SYSTEM):
        async with client_channel(f"127.0.0.1:{port}", caller, tls[0]) as channel:
            return await getattr(intake_pb2_grpc.IntakeStub(channel), method)(message, timeout=5)

    yield call, runtime
    await server.stop(None)


def ask(**changes) -> intake_pb2.RequestConsultationRequest:
    fields = {"pre_application_reference": "PRE-2026-001", "matter_code": "KSTB-SOC-02", "window_id": WINDOW,
              "deciding_partner": "360000", "proposed_materials": ["RESIDENT_ID", "PHOTO"], "reason": "照片存疑"}
    return intake_pb2.RequestConsultationRequest(**{**fields, **changes})


def record(consultation_id: str, outcome: str = "AGREED", agreed=("PHOTO",)) -> intake_pb2.RecordConsultationRequest:
    held = int(now_utc().timestamp() * 1000) if outcome != "NOT_HELD" else 0
    return intake_pb2.RecordConsultationRequest(consultation_id=consultation_id, outcome=outcome,
                                                agreed_materials=list(agreed), held_at_millis=held)


async def test_a_consultation_before_the_application_is_requested_once_and_recorded_once(intake):
    call, runtime = intake
    consultation_id = (await call("RequestConsultation", ask())).consultation_id
    assert (await call("RequestConsultation", ask())).consultation_id == consultation_id
    assert (await call("RecordConsultation", record(consultation_id))).outcome == "AGREED"
    assert (await call("RecordConsultation", record(consultation_id))).outcome == "AGREED"
    error = await refused(call, "RecordConsultation", record(consultation_id, "NOT_AGREED", ()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [e.event_type.rsplit(".", 1)[1] for e in runtime.published] == [
        "ConsultationRequested", "ConsultationRecorded"]
    # A consultation is not an application: Track does not answer for it.
    error = await refused(call, "Track", intake_pb2.TrackRequest(application_id=consultation_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_only_window_systems_for_their_own_windows_ask(intake):
    call, _ = intake
    with pytest.raises(grpc.aio.AioRpcError) as portal:
        await call("RequestConsultation", ask(), caller="hunan-portal")
    assert portal.value.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await refused(call, "RequestConsultation", ask(window_id=OTHERS_WINDOW))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_problem_of_a_request_is_a_field_violation(intake):
    call, runtime = intake
    error = await refused(call, "RequestConsultation", ask(pre_application_reference="", deciding_partner="",
                                                           proposed_materials=["PHOTO", "DIPLOMA"]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(error)) == {"application_id", "deciding_partner", "proposed_materials"}
    assert "DIPLOMA" in violations(error)["proposed_materials"]
    assert runtime.commands == []


async def test_an_unknown_consultation_or_application_is_not_found(intake):
    call, _ = intake
    error = await refused(call, "RecordConsultation", record("CS" + "0" * 20))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    unknown = ask(pre_application_reference="", application_id="TB" + "0" * 20)
    error = await refused(call, "RequestConsultation", unknown)
    assert error.code() == grpc.StatusCode.NOT_FOUND
