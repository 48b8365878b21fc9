"""Partners' submissions over the real broker: an application received at a Hubei window
arrives on tongban.partner.420000.submissions, sealed by the partner for itself; intake
receives it through the same formal checks as Submit, the partner learns its application
number on its acknowledgements topic, and it is carried to DELIVERED. An invalid one and one
reusing a submission id with another payload are refused there with the reason."""

import secrets
from datetime import UTC, datetime

import pytest

from sim.samples import samples
from tests.pii_parties import stack_cipher
from tests.support import REGISTRY, Sink, produce, track, wait_terminal
from tongban import pii_policy, topics
from tongban.events import encode_event

pytestmark = pytest.mark.integration

PARTNER = "420000"
SUBMISSIONS, ACKS = topics.partner_submissions(PARTNER), topics.partner_acknowledgements(PARTNER)
PARTNER_CALLER = "partner-420000"


def submission(submission_id: str, **changes) -> dict:
    """跨省异地就医备案 received at a Hubei window for an applicant insured in Changsha."""
    request = samples(secrets.token_hex(4))[0].request
    applicant = {"kind": request.applicant.kind, "name": request.applicant.name,
                 "id_number": request.applicant.id_number, "phone": request.applicant.phone,
                 **changes.pop("applicant", {})}
    return {"submission_id": submission_id, "matter_code": request.matter_code, "receiving_division": "420106",
            "home_division": "430102", "applicant": applicant,
            "materials": [{"code": m.code, "name": m.name, "provided": m.provided,
                           "original_checked": m.original_checked} for m in request.materials],
            "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": datetime.now(UTC),
            "window_id": "", "commitments": [], "deferred_materials": {}, **changes}


async def send(namespace: str, body: dict) -> None:
    """As the partner writes it: sealed for itself, keyed by its submission id."""
    _, value = encode_event(REGISTRY, topics.PARTNER_SUBMISSION_EVENT, body, cause_id=secrets.token_hex(8),
                            correlation_id=body["submission_id"], source_system=PARTNER_CALLER,
                            source_partner=PARTNER, cipher=stack_cipher(PARTNER),
                            recipients=pii_policy.recipients(SUBMISSIONS))
    await produce(namespace, SUBMISSIONS, body["submission_id"].encode(), value)


def answers(seen, event_type: str, submission_id: str) -> list[dict]:
    return [a for a in seen.events(event_type) if a["submission_id"] == submission_id]


async def test_a_partner_submission_is_numbered_answered_and_carried_to_delivered(stack, namespace):
    submission_id = f"HB-{secrets.token_hex(4)}"
    await send(namespace, submission(submission_id))
    await send(namespace, submission(submission_id))  # a resend: the same application
    async with Sink(namespace, [ACKS, topics.APPLICATION_RECEIVED]) as sink:
        seen = await sink.wait_for(lambda s: answers(s, topics.SUBMISSION_RECEIVED_EVENT, submission_id), within=120)
        [answer] = answers(seen, topics.SUBMISSION_RECEIVED_EVENT, submission_id)
        [received] = seen.events(topics.APPLICATION_RECEIVED_EVENT, answer["application_id"])
        assert received["channel"] == "PARTNER"
        assert received["envelope"]["source_system"] == "tongban-intake"
        assert received["application_number"] == answer["application_number"]
    progress = await wait_terminal(stack, answer["application_id"], within=120, caller=PARTNER_CALLER)
    assert progress.stage == "DELIVERED"
    assert progress.application_number == answer["application_number"]

    # The same id with another payload: refused, naming the field, never the value.
    await send(namespace, submission(submission_id, applicant={"phone": "13900000000"}))
    async with Sink(namespace, [ACKS]) as sink:
        seen = await sink.wait_for(lambda s: answers(s, topics.SUBMISSION_REFUSED_EVENT, submission_id))
        [refused] = answers(seen, topics.SUBMISSION_REFUSED_EVENT, submission_id)
        assert refused["problems"] == ["submission_id was used for another submission; it differs in: applicant.phone"]
        assert len(answers(seen, topics.SUBMISSION_RECEIVED_EVENT, submission_id)) == 1, "numbered once"
    assert (await track(stack, answer["application_id"], PARTNER_CALLER)).stage == "DELIVERED"


async def test_an_invalid_partner_submission_is_refused_on_the_partners_topic_with_every_problem(stack, namespace):
    submission_id = f"HB-{secrets.token_hex(4)}"
    wrong = "420106198506123411"  # the check digit is wrong
    await send(namespace, submission(submission_id, applicant={"id_number": wrong}, delivery_method="POST"))
    async with Sink(namespace, [ACKS]) as sink:
        seen = await sink.wait_for(lambda s: answers(s, topics.SUBMISSION_REFUSED_EVENT, submission_id), within=120)
        [refused] = answers(seen, topics.SUBMISSION_REFUSED_EVENT, submission_id)
    assert [p.split(":")[0].split(" ")[0] for p in refused["problems"]] == ["applicant.id_number", "postal_address"]
    assert wrong not in str(refused)
    assert not answers(seen, topics.SUBMISSION_RECEIVED_EVENT, submission_id)
