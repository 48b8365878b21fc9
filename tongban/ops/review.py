"""`tongban review`: routing's review queue for unroutable work, as an operator.

The operator command imports no service (layers point one way): it learns the Review API's
messages from the routing server itself through gRPC server reflection, as grpcurl does,
and calls it with the operator's client certificate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tongban.grpc_tls import channel_credentials

SERVICE = "tongban.routing.v1.Review"
OPERATOR = "tongban-operator"  # the caller with the operator role (make grpc-certs)
TIMEOUT_S = 10.0


def default_target() -> str:
    return f"127.0.0.1:{os.environ.get('TONGBAN_GRPC_PORT_ROUTING', '50052')}"


def call(target: str, method: str, request: dict[str, Any], caller: str = OPERATOR,
         tls_dir: Path | None = None, service: str = SERVICE) -> dict[str, Any]:
    """One call of the Review service (or another `service` the target serves); the reply as a
    dict (field names as in the proto). Raises grpc.RpcError with the server's status
    (FAILED_PRECONDITION names what the application's state does not allow)."""
    with grpc.secure_channel(target, channel_credentials(caller, tls_dir)) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        rpc = pool.FindServiceByName(service).methods_by_name[method]
        request_type = message_factory.GetMessageClass(rpc.input_type)
        reply_type = message_factory.GetMessageClass(rpc.output_type)
        stub = channel.unary_unary(f"/{service}/{method}", request_serializer=request_type.SerializeToString,
                                   response_deserializer=reply_type.FromString)
        reply = stub(json_format.ParseDict(request, request_type()), timeout=TIMEOUT_S)
        return json_format.MessageToDict(reply, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


def waiting(target: str, **kwargs: Any) -> list[dict[str, Any]]:
    return list(call(target, "ListUnroutable", {}, **kwargs).get("entries", []))


def reroute(target: str, application_id: str, partner: str, reason: str = "", **kwargs: Any) -> dict[str, Any]:
    return call(target, "Reroute", {"application_id": application_id, "deciding_partner": partner,
                                    "reason": reason}, **kwargs)


def reject(target: str, application_id: str, reason: str, **kwargs: Any) -> dict[str, Any]:
    return call(target, "RejectUnroutable", {"application_id": application_id, "reason": reason}, **kwargs)
