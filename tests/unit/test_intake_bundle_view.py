"""一件事一次办 at intake, over in-process gRPC with the runtime stand-in: each matter of a
bundle is submitted as its own application under one bundle reference, which becomes the
bundle id routing groups them by; Track shows the bundle and, once routing releases it,
every application of it. No broker."""

import grpc
import pytest
from test_intake_api import company_at_window, deliver_event, intake, refused, violations  # noqa: F401 (a fixture)
from test_intake_api_auth import tls  # noqa: F401 (a fixture)

from services.intake import domain, intake_pb2
from tongban import topics
from tongban.events import now_utc

PORTAL = "hunan-portal"


def bundled(reference: str) -> intake_pb2.SubmitRequest:
    request = company_at_window()
    request.bundle_reference = reference
    return request


def published_bundle_id(runtime, application_id: str) -> str:
    [received] = [e.payload for e in runtime.published
                  if e.event_type == topics.APPLICATION_RECEIVED_EVENT and e.key == application_id]
    return received["bundle_id"]


async def test_applications_under_one_bundle_reference_carry_one_bundle_id_of_the_caller_s_own(intake):  # noqa: F811
    call, runtime, _ = intake
    first = (await call("Submit", bundled("family-7"))).application_id
    second = (await call("Submit", bundled("family-7"))).application_id
    alone = (await call("Submit", company_at_window())).application_id
    assert len({first, second, alone}) == 3
    bundle_id = published_bundle_id(runtime, first)
    assert bundle_id == domain.bundle_id_for(PORTAL, "family-7") == published_bundle_id(runtime, second)
    assert bundle_id.startswith("TBB")
    assert bundle_id != domain.bundle_id_for("another-portal", "family-7"), "a reference is the caller's own"
    assert published_bundle_id(runtime, alone) == ""
    progress = await call("Track", intake_pb2.TrackRequest(application_id=first))
    assert progress.bundle_id == bundle_id


async def test_a_retry_that_names_another_bundle_is_another_submission(intake):  # noqa: F811
    call, _, _ = intake
    request = bundled("family-8")
    await call("Submit", request)
    request.bundle_reference = "family-9"
    error = await refused(call, "Submit", request)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error.details().endswith("differs in: bundle_reference")


@pytest.mark.parametrize(("reference", "words"), [("x" * 129, "at most 128 characters"),
                                                  ("pii:v1:abc", "looks sealed")])
async def test_a_bundle_reference_is_bounded_and_never_sealed(intake, reference, words):  # noqa: F811
    call, _, _ = intake
    error = await refused(call, "Submit", bundled(reference))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in violations(error)["bundle_reference"]


async def test_track_shows_the_bundle_waiting_and_then_every_application_of_it(intake):  # noqa: F811
    call, runtime, _ = intake
    application_id = (await call("Submit", bundled("family-10"))).application_id
    bundle_id = domain.bundle_id_for(PORTAL, "family-10")
    await deliver_event(runtime, application_id, topics.BUNDLE_MEMBER_HELD_EVENT, {
        "application_id": application_id, "matter_code": "KSTB-MKT-01", "bundle_id": bundle_id, "routable": True,
        "reason": ""})
    progress = await call("Track", intake_pb2.TrackRequest(application_id=application_id))
    assert progress.history[-1].stage == "BUNDLE_WAITING"
    assert progress.stage == "RECEIVED"  # a step, not a stage
    await deliver_event(runtime, application_id, topics.BUNDLE_RELEASED_EVENT, {
        "application_id": application_id, "bundle_id": bundle_id, "bundle_code": "BUNDLE-ENTERPRISE-OPENING",
        "applications": [application_id, "TBOTHER"], "release": "ROUTE", "reason": "", "released_at": now_utc()})
    progress = await call("Track", intake_pb2.TrackRequest(application_id=application_id))
    assert (progress.bundle_code, list(progress.bundle_applications)) == (
        "BUNDLE-ENTERPRISE-OPENING", [application_id, "TBOTHER"])
    assert (progress.history[-1].stage, progress.history[-1].detail) == (
        "BUNDLE_RELEASED", "BUNDLE-ENTERPRISE-OPENING: ROUTE")
