"""Keyed hashes follow the cipher suite (tongban.pii.keyed_digest): HMAC-SHA256 under the
default AES-256-GCM, giving exactly the values made before the suite chose it, and HMAC-SM3
under SM4-GCM, for delivery's dispatch ids and the 12345 platform's caller hashes."""

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, hmac

from services.delivery import handlers
from services.delivery.channels.base import Deployment, dispatch_id_for
from services.delivery.matters import Matter
from sim import hotline
from tongban.codec import SchemaRegistry
from tongban.handling import Event
from tongban.pii import DEFAULT_SUITE, Keyring, PiiCipher, keyed_digest, new_key, suite_available

SM4 = "sm4-gcm"
needs_sm4 = pytest.mark.skipif(not suite_available(SM4), reason="this OpenSSL build offers no SM4-GCM/SM3")
REGISTRY = SchemaRegistry.load()
APP = "TB20261102000001"
SECRET = b"fixed dispatch secret"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RECEIVED = "tongban.application.ApplicationReceived"
NUMBER = "13912345678"

# Fixed vectors from the code before keyed hashes followed the suite (hmac.new(..., sha256)):
# dispatch ids of work in flight and caller hashes already on the topic must not change.
DISPATCH_BEFORE = {1: "DSPEF809D499DC22D7BC771FB71", 2: "DSP9BFDB26533B393E9E12CAEE3"}
CALLER_HASH_BEFORE = "b30713ca7ad26b6d6e68b6c377d77ad3"


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC with SM3, straight from `cryptography`: the reference the suite is checked against."""
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def test_the_default_suite_gives_the_same_dispatch_ids_and_caller_hashes_as_before():
    assert DEFAULT_SUITE == "aes-256-gcm"
    for attempt, expected in DISPATCH_BEFORE.items():
        assert dispatch_id_for(SECRET, APP, attempt) == expected
        assert dispatch_id_for(SECRET, APP, attempt, DEFAULT_SUITE) == expected
    assert hotline.caller_hash(NUMBER) == CALLER_HASH_BEFORE
    assert hotline.caller_hash(NUMBER, suite=DEFAULT_SUITE) == CALLER_HASH_BEFORE


@needs_sm4
def test_sm4_gcm_gives_hmac_sm3():
    data = f"{APP}:1".encode()
    assert keyed_digest(SECRET, data, SM4) == hmac_sm3(SECRET, data)
    assert keyed_digest(SECRET, data, SM4) != keyed_digest(SECRET, data)
    assert dispatch_id_for(SECRET, APP, 1, SM4) == "DSP" + hmac_sm3(SECRET, data).hex()[:24].upper()
    assert dispatch_id_for(SECRET, APP, 1, SM4) not in DISPATCH_BEFORE.values()
    assert hotline.caller_hash(NUMBER, suite=SM4) == hmac_sm3(hotline.SALT, NUMBER.encode()).hex()[:32]


def sm4_keys(*parties: str) -> dict:
    return {party: {key.key_id: key} for party in parties for key in [new_key(suite=SM4)]}


@needs_sm4
async def test_delivery_under_sm4_dispatches_with_an_hmac_sm3_id():
    keys = sm4_keys("verification", "delivery")
    intake = PiiCipher(Keyring(None, {}, {p: next(iter(k.values())) for p, k in keys.items()}, SM4))
    delivery = PiiCipher(Keyring.of("delivery", keys["delivery"], SM4))

    def sealed(value: str, path: str) -> str:
        return intake.seal(value, record=RECEIVED, path=path, subject=APP, recipients=("verification", "delivery"))

    applicant = {"kind": "PERSON", "name": sealed("示例", "applicant.name"),
                 "id_number": sealed("430102199003071234", "applicant.id_number"),
                 "phone": sealed("13800000000", "applicant.phone")}
    assignment = f"{APP}:440000"
    decisions = "tongban.partner.440000.decisions"
    steps = [
        (RECEIVED, "tongban.application.received",
         {"applicant": applicant, "materials": [], "delivery_method": "POST", "matter_code": "KSTB-MKT-01",
          "postal_address": sealed("长沙", "postal_address")}),
        ("tongban.application.ApplicationRouted", "tongban.application.routed",
         {"application_id": APP, "matter_code": "KSTB-MKT-01", "mode": "RECEIVE_HERE_HANDLE_THERE",
          "deciding_partner": "440000", "deciding_division": "440300", "legs": [], "promised_working_days": 3,
          "due_at": T0}),
        ("tongban.application.ApplicationVerified", "tongban.application.verified",
         {"application_id": APP, "checks": []}),
        ("tongban.partner.AuthorityAcceptance", decisions,
         {"assignment_id": assignment, "application_id": APP, "outcome": "ACCEPTED", "reason": None,
          "accepted_at": T0}),
        ("tongban.partner.AuthorityDecision", decisions,
         {"assignment_id": assignment, "application_id": APP, "outcome": "APPROVED",
          "result_reference": "440300-MKT2026000001", "reason": None, "decided_at": T0}),
    ]
    deployment = Deployment(secret=SECRET, matters=lambda code: Matter(True, "PAPER_LICENCE"))
    every = handlers.make_handlers(delivery, REGISTRY, clock=lambda: T0, results=deployment)
    state, emitted = None, []
    for event_type, topic, payload in steps:
        event = Event(f"id-{event_type}", event_type, APP, payload, {"occurred_at": T0, "correlation_id": APP}, topic)
        outcome = await every[event_type](event, state)
        state = outcome.state if outcome.state is not None else state
        emitted.extend(outcome.emits)
    dispatches = [e.payload["dispatch_id"] for e in emitted if e.event_type == "tongban.delivery.PostalDispatch"]
    assert dispatches == ["DSP" + hmac_sm3(SECRET, f"{APP}:1".encode()).hex()[:24].upper()]
    assert state["result"]["dispatches"] == dispatches


@needs_sm4
def test_the_hotline_under_sm4_writes_hmac_sm3_caller_hashes():
    hotline_cipher = PiiCipher(Keyring.of("12345", sm4_keys("12345")["12345"], SM4))
    case = hotline.consultation("WO1", NUMBER, "KSTB-MKT-01", "430102")
    bodies = [REGISTRY.decode(value)[1] for _, value in hotline.work_order_records(REGISTRY, hotline_cipher, case, T0)]
    assert {b["caller_hash"] for b in bodies} == {hmac_sm3(hotline.SALT, NUMBER.encode()).hex()[:32]}
