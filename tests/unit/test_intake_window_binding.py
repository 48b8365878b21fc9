"""Submit binds the window: a window system (its client certificate) submits only for a
window it operates (tongban/windows.toml `systems`), and that window is the one the
published ApplicationReceived names. In-process over mutual TLS with the shipped window
registry and the runtime stand-in of test_intake_api_auth; 好差评 of the window that
received through the same API."""

import secrets

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from test_intake_api_auth import InstantRuntime, tls  # noqa: F401 (a fixture)

from services.intake import domain, intake_pb2, intake_pb2_grpc
from services.intake.api import IntakeServicer
from sim.samples import samples
from tongban import topics, windows
from tongban.grpc_tls import client_channel, server_credentials

CHANGSHA = "HN-430103-KSTB-01"  # operated by changsha-window
XIANGXI = "HN-433101-KSTB-01"  # operated by xiangxi-window


@pytest.fixture
async def intake(tls):  # noqa: F811
    runtime = InstantRuntime()
    server = grpc.aio.server()
    intake_pb2_grpc.add_IntakeServicer_to_server(IntakeServicer(runtime, None, windows.registry()), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls[0], "intake"))
    await server.start()

    async def call(method: str, message, caller: str = "changsha-window"):
        async with client_channel(f"127.0.0.1:{port}", caller, tls[0]) as channel:
            return await getattr(intake_pb2_grpc.IntakeStub(channel), method)(message, timeout=5)

    yield call, runtime
    await server.stop(None)


def at_window(window_id: str = CHANGSHA) -> intake_pb2.SubmitRequest:
    """公司设立登记 received at the Changsha (天心区) window."""
    request = intake_pb2.SubmitRequest()
    request.CopyFrom(next(s.request for s in samples(secrets.token_hex(4)) if "公司设立登记" in s.title))
    request.source_system, request.window_id, request.receiving_division = "", window_id, "430103"
    return request


async def refused(call, message, caller: str = "changsha-window") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call("Submit", message, caller)
    return error.value


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    [detail] = rpc_status.from_call(error).details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


async def test_a_window_system_submits_for_its_own_window_and_the_application_names_it(intake):
    call, runtime = intake
    reply = await call("Submit", at_window())
    [received] = [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    assert (received.key, received.payload["window_id"]) == (reply.application_id, CHANGSHA)
    assert runtime.states[reply.application_id]["window_id"] == CHANGSHA


async def test_another_systems_window_is_permission_denied_naming_the_field(intake):
    call, runtime = intake
    error = await refused(call, at_window(CHANGSHA), caller="xiangxi-window")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert violations(error) == {"window_id": "window_id: the window is operated by another system than the caller"}
    assert runtime.commands == [], "nothing is recorded"


@pytest.mark.parametrize(("window_id", "words"), [
    ("", "window_id is required when a window system submits"),
    ("HN-999999-NOPE-01", "not a registered 跨省通办 window"),
])
async def test_a_missing_or_unknown_window_is_invalid_argument(intake, window_id, words):
    call, runtime = intake
    error = await refused(call, at_window(window_id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in violations(error)["window_id"]
    assert runtime.commands == []


async def test_a_portal_submits_without_a_window(intake):
    call, _ = intake
    request = at_window("")
    request.channel = "PORTAL"
    assert (await call("Submit", request, "hunan-portal")).application_id


def test_the_binding_rule_on_the_shipped_registry():
    registry = windows.registry()
    assert domain.window_binding("xiangxi-window", "window", XIANGXI, registry) is None
    assert domain.window_binding("changsha-window", "window", XIANGXI, registry)[0] == "PERMISSION_DENIED"
    assert domain.window_binding("hunan-portal", "portal", "", registry) is None


async def test_the_receiving_window_is_rated_once_online_and_the_second_is_already_exists(intake):
    call, runtime = intake
    application_id = (await call("Submit", at_window())).application_id
    rate = intake_pb2.RateRequest(application_id=application_id, level=2, channel="ONLINE",
                                  rating_reference="r1", rated_role="RECEIVING")
    first = await call("Rate", rate)
    assert (await call("Rate", rate)).rating_id == first.rating_id, "a retry is the same rating"
    rate.rating_reference = "r2"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call("Rate", rate)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "一事一评" in error.value.details()
    [rating] = [e.payload for e in runtime.published if e.event_type == topics.SERVICE_RATING_EVENT]
    assert (rating["party"], rating["division_code"], rating["rated_role"]) == (CHANGSHA, "430103", "RECEIVING")
