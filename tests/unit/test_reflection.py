"""Server reflection over the real mutual-TLS channel: a reflection client (what grpcurl does
for `grpcurl list` and `describe`) lists intake's services and methods, registered the way
`tongban.app.serve` registers them. Without a client certificate nothing is listed."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.intake import intake_pb2_grpc
from services.intake.api import IntakeServicer
from tongban import reflection
from tongban.grpc_tls import client_channel, server_credentials

INTAKE = "tongban.intake.v1.Intake"


@pytest.fixture
async def intake(tls):
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    registering = reflection.Registering(server)
    intake_pb2_grpc.add_IntakeServicer_to_server(IntakeServicer(runtime=None), registering)
    reflection.enable(server, [health.SERVICE_NAME, *registering.services])
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, "intake"))
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def ask(channel: grpc.aio.Channel, *requests: reflection_pb2.ServerReflectionRequest
              ) -> list[reflection_pb2.ServerReflectionResponse]:
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
    answers = []
    for request in requests:
        await call.write(request)
        answers.append(await call.read())
    await call.done_writing()
    return answers


async def test_a_reflection_client_lists_intakes_services_and_methods(intake, tls):
    async with client_channel(intake, "hunan-portal", tls) as channel:
        listed, described = await ask(channel, reflection_pb2.ServerReflectionRequest(list_services=""),
                                      reflection_pb2.ServerReflectionRequest(file_containing_symbol=INTAKE))
    services = {s.name for s in listed.list_services_response.service}
    assert {INTAKE, health.SERVICE_NAME, "grpc.reflection.v1alpha.ServerReflection"} <= services
    files = [FileDescriptorProto.FromString(raw) for raw in described.file_descriptor_response.file_descriptor_proto]
    methods = {m.name: (m.input_type, m.output_type, m.server_streaming)
               for f in files if f.package == "tongban.intake.v1" for s in f.service if s.name == "Intake"
               for m in s.method}
    assert set(methods) >= {"Submit", "Track", "Withdraw", "Rate", "SupplementMaterials", "Watch"}
    assert methods["Submit"][:2] == (".tongban.intake.v1.SubmitRequest", ".tongban.intake.v1.SubmitReply")
    assert methods["Watch"][2] is True
    assert methods["Submit"][2] is False


async def test_an_unknown_symbol_is_answered_not_found(intake, tls):
    async with client_channel(intake, "hunan-portal", tls) as channel:
        (answer,) = await ask(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.Such"))
    assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_reflection_needs_a_client_certificate_like_every_call(intake, tls):
    credentials = grpc.ssl_channel_credentials(root_certificates=(tls / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(intake, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
