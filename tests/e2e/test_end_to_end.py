"""Applications submitted through intake's gRPC API travel through all five services and the
partner simulator over the real broker and store."""

import asyncio
import json
import os
import secrets
import shutil

import grpc
import pytest

from devtools.launcher import ROOT
from services.intake import intake_pb2, intake_pb2_grpc
from services.intake.api import received_body
from sim.samples import samples
from tests.pii_parties import sealed_by, stack_cipher
from tests.support import REGISTRY, Sink, settle, submit, trace_file, wait_terminal
from tongban.bus import make_producer, publish_schemas
from tongban.codec import SchemaRegistry
from tongban.config import load_settings
from tongban.events import encode_event
from tongban.grpc_tls import client_channel
from tongban.pii import sealed_for

pytestmark = pytest.mark.integration

LIFECYCLE = ["tongban.application.received", "tongban.application.routed", "tongban.application.verified",
             "tongban.application.accepted", "tongban.application.decided", "tongban.application.delivered",
             "tongban.feedback.ratings", "tongban.partner.ems.dispatches"]


# What an independent reader of the lifecycle topics sees last for each kind of ending, and why.
ENDINGS = {
    "DELIVERED": ("tongban.application.ApplicationDelivered",
                  lambda e, sample: e["method"] == sample.request.delivery_method),
    "DENIED": ("tongban.application.ApplicationDecided", lambda e, sample: e["outcome"] == "DENIED" and e["reason"]),
    "REJECTED:失业登记": ("tongban.application.ApplicationVerificationFailed",
                        lambda e, sample: any("check character" in r for r in e["reasons"])),
    "REJECTED:a matter": ("tongban.application.ApplicationUnroutable",
                          lambda e, sample: e["reason"] == "matter code is not in the catalogue"),
}


def ending_of(sample) -> tuple:
    return ENDINGS.get(sample.expected) or next(v for k, v in ENDINGS.items()
                                                if k.startswith(f"{sample.expected}:") and k[9:] in sample.title)


async def test_every_sample_reaches_its_terminal_state_for_the_right_reason(stack, namespace):
    expected = {}
    for sample in samples(secrets.token_hex(4)):
        if sample.expected == "REJECTED_AT_INTAKE":
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await submit(stack, sample.request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details().startswith(("postal_address is required", "applicant.id_number:"))
            continue
        expected[await submit(stack, sample.request)] = sample
    async with Sink(namespace, LIFECYCLE) as sink:
        for application_id, sample in expected.items():
            event_type, why = ending_of(sample)
            seen = await sink.wait_for(lambda s, t=event_type, a=application_id: s.events(t, a))
            assert why(seen.events(event_type, application_id)[0], sample), sample.title
    for application_id, sample in expected.items():
        progress = await wait_terminal(stack, application_id)
        assert progress.stage == sample.expected, (sample.title, [h.stage for h in progress.history])


async def test_one_application_is_delivered_rated_and_traced_through_every_service(stack, namespace):
    request = samples(secrets.token_hex(4))[1].request  # 公司设立登记 with the licence by post
    application_id = await submit(stack, request)
    assert await submit(stack, request) == application_id, "a retried Submit is the same application"

    progress = await wait_terminal(stack, application_id)
    assert progress.stage == "DELIVERED"
    assert {"RECEIVED", "ROUTED", "VERIFIED", "ACCEPTED", "DECIDED", "DELIVERED"} <= {h.stage for h in
                                                                                      progress.history}
    assert progress.deciding_partner == "440000"
    assert progress.result_reference.startswith("EL-440000-"), "the licence Guangdong's library issued"
    assert progress.tracking_number.startswith("EMS")

    async with client_channel(stack.grpc_target("intake")) as channel:
        await intake_pb2_grpc.IntakeStub(channel).Rate(intake_pb2.RateRequest(
            application_id=application_id, level=1, channel="ONLINE", rating_reference="r1"))
    rated = await wait_terminal(stack, application_id, until=lambda progress: progress.ratings)
    assert list(rated.ratings) == [1]

    async with Sink(namespace, LIFECYCLE) as sink:
        await sink.wait_for(lambda s: s.events("tongban.feedback.ServiceRating", application_id))
        seen = await settle(namespace, ["tongban.application.received"], application_id, sink)
    # records, not distinct ids: a second ApplicationReceived of a retried Submit would carry the same id
    assert len(seen.events("tongban.application.ApplicationReceived", application_id)) == 1, \
        "the retried Submit put a second record on the wire"
    rating = seen.events("tongban.feedback.ServiceRating", application_id)[0]
    assert (rating["level"], rating["party"], rating["matter_code"]) == (1, "440000", "KSTB-MKT-01")
    # Personal fields travel sealed for the carrier alone, which reads the address with its key.
    dispatch = seen.events("tongban.delivery.PostalDispatch", application_id)[0]
    assert dispatch["address"].startswith("pii:v2:")
    assert sealed_for(dispatch["address"]) == ["ems"]
    assert stack_cipher("ems").open(dispatch["address"], record="tongban.delivery.PostalDispatch", path="address",
                                    subject=application_id) == request.postal_address
    raw = b"".join(r.value for r in seen.records if r.key == application_id.encode())
    for personal in (request.applicant.id_number, request.applicant.name, request.postal_address):
        assert personal.encode() not in raw

    # One trace follows the application through intake, routing, verification, delivery,
    # the partner authority, the carrier and, with the rating, feedback.
    services: set[str] = set()
    for _ in range(50):
        spans = [json.loads(line) for line in trace_file(stack).read_text().splitlines()]
        submit_span = next(s for s in spans if s["name"] == "intake.Submit"
                           and s["attributes"].get("tongban.application_id") == application_id)
        services = {s["service"] for s in spans if s["trace_id"] == submit_span["trace_id"]}
        if "tongban-feedback" in services:
            break
        await asyncio.sleep(0.2)
    assert {"tongban-intake", "tongban-routing", "tongban-verification", "tongban-delivery",
            "tongban-feedback", "tongban-partner-sim"} <= services

    # Personal data travels in events only: never in logs or traces.
    for written in stack.log_dir.iterdir():
        text = written.read_text(encoding="utf-8")
        for personal in (request.applicant.id_number, request.applicant.name, request.postal_address,
                         request.applicant.phone):
            assert personal not in text, f"personal data in {written.name}"


async def test_services_read_a_newer_writer_once_its_schema_is_on_the_schema_topic(stack, namespace, tmp_path):
    """A partner's intake system already writes a newer ApplicationReceived (one more optional
    field). It publishes its schema to tongban.schemas like every writer; our readers learn
    it there, resolve the record and carry the application to its end."""
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    newer = json.loads((schemas / "tongban.application.ApplicationReceived.v2.avsc").read_text())
    newer["fields"].append({"name": "consultation_room", "type": ["null", "string"], "default": None,
                            "doc": "the video consultation room used at the window"})
    (schemas / "tongban.application.ApplicationReceived.v3.avsc").write_text(json.dumps(newer, ensure_ascii=False))
    writer = SchemaRegistry.load(schemas)
    assert writer.latest("tongban.application.ApplicationReceived").version == 3
    assert REGISTRY.by_fingerprint(writer.latest("tongban.application.ApplicationReceived").fingerprint) is None

    settings = load_settings("intake", {**os.environ, "TONGBAN_NAMESPACE": namespace})
    request = samples(secrets.token_hex(4))[0].request
    application_id = "TBV2" + secrets.token_hex(8).upper()
    body = {**received_body(application_id, request), "application_number": "", "consultation_room": "3号视频会商室"}
    _, value = encode_event(writer, "tongban.application.ApplicationReceived", body, cause_id=application_id,
                            correlation_id=application_id, source_system="partner-intake-v2",
                            **sealed_by("intake", "tongban.application.received"))
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish_schemas(producer, settings, writer)
        await producer.send_and_wait(settings.topic("tongban.application.received"), key=application_id.encode(),
                                     value=value)
    finally:
        await producer.stop()
    # Written to the topic, not received through intake's API: an operator tracks it.
    assert (await wait_terminal(stack, application_id, caller="tongban-operator")).stage == "DELIVERED"
