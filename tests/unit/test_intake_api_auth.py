"""Intake's gRPC API over real mutual TLS, in-process: the real servicer and handlers on a
loopback port, certificates from a CA made for this module, and a runtime stand-in that
applies commands at once (the broker and store are not needed to decide who may call).

Refused at the TLS handshake (the client sees UNAVAILABLE, nothing reaches a method): no
certificate, a certificate from another CA, an expired one. UNAUTHENTICATED: a certificate
from the CA that names no caller. PERMISSION_DENIED: a role that may not call a method, a
`source_system` that is not the caller's, an application the caller may not see."""

import asyncio
import datetime as dt
import secrets

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.intake import domain, handlers, intake_pb2, intake_pb2_grpc
from services.intake.api import IntakeServicer
from sim.samples import samples
from tongban.events import now_utc
from tongban.grpc_tls import ROLE_URI, channel_credentials, client_channel, server_credentials
from tongban.handling import Emit, Event
from tongban.ops import certs

PERSONAL = ("id_number", "name", "phone")


class InstantRuntime:
    """The runtime's command and read API, applying each command through the real handler."""

    def __init__(self) -> None:
        self.states: dict[str, dict] = {}
        self.commands: list[tuple[str, str]] = []
        self.command_ids: list[tuple[str, str]] = []
        self.published: list[Emit] = []

    async def submit(self, command_type: str, key: str, command_id: str, payload: dict) -> None:
        self.commands.append((command_type, key))
        self.command_ids.append((command_type, command_id))
        if any(done == command_id for _, done in self.command_ids[:-1]):
            return  # the runtime drops a command it has applied (dedupe)
        event = Event(command_id, command_type, key, payload, {"occurred_at": now_utc(), "correlation_id": key},
                      "command")
        await self._apply(handlers.COMMANDS[command_type], event)

    async def _apply(self, handler, event: Event) -> None:
        """Apply, then hand what intake publishes on its own inputs back to it (the numbered
        application returns to the view)."""
        outcome = await handler(event, self.states.get(event.key))
        if outcome.state is not None:
            self.states[event.key] = outcome.state
        self.published += outcome.emits
        for n, emit in enumerate(outcome.emits):
            if emit.topic in handlers.INPUTS and emit.event_type in handlers.HANDLERS:
                await self._apply(handlers.HANDLERS[emit.event_type],
                                  Event(f"{event.event_id}/{n}", emit.event_type, emit.key, emit.payload,
                                        {"occurred_at": now_utc(), "correlation_id": emit.key}, emit.topic))

    async def state_of(self, key: str) -> dict | None:
        return self.states.get(key)

    async def wait_for_state(self, key: str, done, within: float) -> dict | None:
        # Commands apply at once here; a change made by the test is seen at the next look.
        state = self.states.get(key)
        if not done(state):
            await asyncio.sleep(min(within, 0.01))
            state = self.states.get(key)
        return state if done(state) else None

    async def trace_of(self, key: str) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """Our CA with the local callers and two certificates it must refuse; another CA."""
    ours = tmp_path_factory.mktemp("tls")
    certs.setup(ours)
    ca, ca_key = certs.load_ca(ours)
    expired = certs.make_client(ca, ca_key, "changsha-window", "window", days=1,
                                not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    certs.write_pair(*certs.client_files(ours, "expired-window"), *expired)
    no_role = certs._leaf(ca, ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no-role")]),
                          [x509.DNSName("no-role.example")], ExtendedKeyUsageOID.CLIENT_AUTH, 30)
    certs.write_pair(*certs.client_files(ours, "no-role"), *no_role)
    foreign = tmp_path_factory.mktemp("foreign-tls")
    certs.setup(foreign, callers={"changsha-window": "window"})  # same names, another CA
    return ours, foreign


@pytest.fixture
async def intake(tls):
    ours, _ = tls
    runtime = InstantRuntime()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    intake_pb2_grpc.add_IntakeServicer_to_server(IntakeServicer(runtime), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(ours, "intake"))
    await server.start()
    yield f"127.0.0.1:{port}", runtime
    await server.stop(None)


def request(channel: str = "PORTAL", source_system: str = "") -> intake_pb2.SubmitRequest:
    r = intake_pb2.SubmitRequest()
    r.CopyFrom(samples(secrets.token_hex(4))[0].request)
    r.source_system, r.channel = source_system, channel
    return r


async def call(target: str, caller: str, method: str, message, tls_dir, **kw):
    async with client_channel(target, caller, tls_dir) as channel:
        return await getattr(intake_pb2_grpc.IntakeStub(channel), method)(message, timeout=5, **kw)


async def refused(target: str, caller: str, method: str, message, tls_dir) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(target, caller, method, message, tls_dir)
    return error.value


async def submit(intake, tls, caller: str, **kw) -> str:
    return (await call(intake[0], caller, "Submit", request(**kw), tls[0])).application_id


def track(application_id: str) -> intake_pb2.TrackRequest:
    return intake_pb2.TrackRequest(application_id=application_id)


def rate(application_id: str) -> intake_pb2.RateRequest:
    return intake_pb2.RateRequest(application_id=application_id, level=1, channel="ONLINE", rating_reference="r1")


def conclude(runtime: InstantRuntime, application_id: str) -> None:
    runtime.states[application_id] = domain.advance(runtime.states[application_id], application_id, "DELIVERED",
                                                    now_utc(), "ELECTRONIC")


# ------------------------------------------------------------------------------ transport
async def test_a_call_without_a_client_certificate_is_refused_at_the_handshake(intake, tls):
    target, runtime = intake
    trusting = grpc.ssl_channel_credentials(root_certificates=(tls[0] / "ca.pem").read_bytes())
    for channel in (grpc.aio.secure_channel(target, trusting), grpc.aio.insecure_channel(target)):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await intake_pb2_grpc.IntakeStub(channel).Submit(request(), timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert runtime.commands == []


async def test_a_certificate_from_another_ca_is_refused_even_with_a_valid_callers_name_and_role(intake, tls):
    target, runtime = intake
    error = await refused(target, "changsha-window", "Submit", request(), tls[1])
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert runtime.commands == []


async def test_an_expired_certificate_from_our_ca_is_refused(intake, tls):
    error = await refused(intake[0], "expired-window", "Submit", request(), tls[0])
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_services_server_certificate_presented_as_a_client_certificate_is_refused(intake, tls):
    """TLS itself checks the purpose (server-auth only); the identity check would refuse it too."""
    ours = tls[0]
    cert, key = certs.client_files(ours, "server-as-client")
    cert.write_bytes(certs.server_files(ours, "routing")[0].read_bytes())
    key.write_bytes(certs.server_files(ours, "routing")[1].read_bytes())
    error = await refused(intake[0], "server-as-client", "Submit", request(), ours)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert intake[1].commands == []


async def test_a_certificate_from_our_ca_that_names_no_role_is_unauthenticated(intake, tls):
    error = await refused(intake[0], "no-role", "Submit", request(), tls[0])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "exactly one role" in error.details()
    assert ROLE_URI in error.details()


@pytest.mark.parametrize("caller", ["tongban-monitor", "changsha-window", "no-role"])
async def test_health_answers_any_certificate_from_our_ca_whatever_its_role(intake, tls, caller):
    async with client_channel(intake[0], caller, tls[0]) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_channel_credentials_name_the_missing_file_and_how_to_make_it(tmp_path):
    with pytest.raises(Exception, match="make setup"):
        channel_credentials("changsha-window", tmp_path)


# ------------------------------------------------------------------------------ roles
@pytest.mark.parametrize(("caller", "method"), [
    ("tongban-monitor", "Submit"), ("tongban-monitor", "Track"), ("tongban-monitor", "Rate"),
    ("tongban-operator", "Submit"), ("tongban-operator", "Rate"),
])
async def test_a_role_that_may_not_call_a_method_is_permission_denied(intake, tls, caller, method):
    target, runtime = intake
    message = {"Submit": request(), "Track": track("TBX"), "Rate": rate("TBX")}[method]
    error = await refused(target, caller, method, message, tls[0])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"intake.{method}: role " in error.details()
    assert runtime.commands == []


@pytest.mark.parametrize("caller", ["changsha-window", "hunan-portal", "partner-420000"])
async def test_window_portal_and_partner_systems_may_submit(intake, tls, caller):
    application_id = await submit(intake, tls, caller)
    assert intake[1].states[application_id]["source_system"] == caller


# ------------------------------------------------------------------------------ source_system
async def test_a_submit_naming_another_source_system_is_refused_and_nothing_is_recorded(intake, tls):
    target, runtime = intake
    spoofed = request(source_system="hunan-portal")
    error = await refused(target, "changsha-window", "Submit", spoofed, tls[0])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "source_system must be the caller's own (changsha-window" in error.details()
    assert all(getattr(spoofed.applicant, f) not in error.details() for f in PERSONAL)
    assert runtime.commands == []


async def test_source_system_left_empty_is_the_callers_and_so_is_the_application_id(intake, tls):
    sent = request(source_system="")
    reply = await call(intake[0], "changsha-window", "Submit", sent, tls[0])
    assert reply.application_id == domain.application_id_for("changsha-window", sent.client_reference)
    named = request(source_system="changsha-window")
    named.client_reference = sent.client_reference
    again = await call(intake[0], "changsha-window", "Submit", named, tls[0])
    assert again.application_id == reply.application_id, "naming its own source system is the same application"
    assert intake[1].states[reply.application_id]["source_role"] == "window"


async def test_the_same_client_reference_from_two_callers_is_two_applications(intake, tls):
    sent = request()
    first = await call(intake[0], "changsha-window", "Submit", sent, tls[0])
    second = await call(intake[0], "xiangxi-window", "Submit", sent, tls[0])
    assert first.application_id != second.application_id


# ------------------------------------------------------------------------------ who sees what
async def test_a_window_system_tracks_its_own_application_but_not_another_windows(intake, tls):
    target, _ = intake
    application_id = await submit(intake, tls, "changsha-window", channel="WINDOW")
    assert (await call(target, "changsha-window", "Track", track(application_id), tls[0])).stage == "RECEIVED"
    error = await refused(target, "xiangxi-window", "Track", track(application_id), tls[0])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "intake.Track: the caller may not see this application (another system received it)"


@pytest.mark.parametrize("caller", ["hunan-portal", "gov-portal", "partner-420000"])
async def test_neither_a_portal_nor_a_partner_tracks_what_a_window_received(intake, tls, caller):
    application_id = await submit(intake, tls, "changsha-window", channel="WINDOW")
    error = await refused(intake[0], caller, "Track", track(application_id), tls[0])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_any_portal_tracks_and_rates_what_a_portal_received_and_a_window_does_not(intake, tls):
    target, runtime = intake
    application_id = await submit(intake, tls, "hunan-portal")
    assert (await call(target, "gov-portal", "Track", track(application_id), tls[0])).application_id == application_id
    conclude(runtime, application_id)
    for caller in ("changsha-window", "partner-420000"):
        assert (await refused(target, caller, "Track", track(application_id), tls[0])).code() \
            == grpc.StatusCode.PERMISSION_DENIED
        assert (await refused(target, caller, "Rate", rate(application_id), tls[0])).code() \
            == grpc.StatusCode.PERMISSION_DENIED
    assert (await call(target, "gov-portal", "Rate", rate(application_id), tls[0])).rating_id
    assert [r["level"] for r in runtime.states[application_id]["ratings"]] == [1]


async def test_an_operator_tracks_any_application(intake, tls):
    for receiver in ("changsha-window", "hunan-portal", "partner-420000"):
        application_id = await submit(intake, tls, receiver)
        progress = await call(intake[0], "tongban-operator", "Track", track(application_id), tls[0])
        assert progress.application_id == application_id


async def test_a_window_rates_its_own_concluded_application_but_not_another_windows(intake, tls):
    target, runtime = intake
    application_id = await submit(intake, tls, "changsha-window", channel="WINDOW")
    conclude(runtime, application_id)
    error = await refused(target, "xiangxi-window", "Rate", rate(application_id), tls[0])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [c for c, _ in runtime.commands].count(handlers.RATE) == 0
    assert (await call(target, "changsha-window", "Rate", rate(application_id), tls[0])).rating_id


async def test_an_unknown_application_is_not_found_for_a_caller_allowed_to_track(intake, tls):
    error = await refused(intake[0], "changsha-window", "Track", track("TB00000000000000000000"), tls[0])
    assert error.code() == grpc.StatusCode.NOT_FOUND
