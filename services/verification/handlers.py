"""Verification service.

Inputs:  ApplicationReceived (applicant, materials) and ApplicationRouted (the decision)
         on tongban.application.received / .routed, in either order.
Outputs: ApplicationVerified or ApplicationVerificationFailed on tongban.application.verified,
         once both inputs are in.
State:   per application: the file to verify and the result.
Rules:   services.verification.domain (identity numbers, materials, 补正/容缺).
"""

from __future__ import annotations

from dataclasses import asdict

from services.verification.domain import Applicant, ProvidedMaterial, verify_application
from tongban import topics
from tongban.events import now_utc
from tongban.handling import Emit, Event, Handler, Outcome
from tongban.pii import PiiCipher
from tongban.scrub import scrub, scrub_all

VERIFIED = topics.APPLICATION_VERIFIED
INPUTS = [topics.APPLICATION_RECEIVED, topics.APPLICATION_ROUTED]


def _verify(key: str, state: dict, cipher: PiiCipher) -> Outcome:
    """Verify once the file and the routing decision are both in; otherwise just keep state."""
    if "result" in state:  # already concluded (or unroutable): keep no personal data
        state.pop("application", None)
        return Outcome(state=state, finished=True)
    if "application" not in state or "routed" not in state:
        return Outcome(state=state)
    application = state["application"]
    a = application["applicant"]
    # The one place verification needs the plaintext: checking the identity number. Values are
    # bound to where intake sealed them: this application's ApplicationReceived.
    name, id_number = (cipher.open(a[f], record=topics.APPLICATION_RECEIVED_EVENT, path=f"applicant.{f}", subject=key)
                       for f in ("name", "id_number"))
    result = verify_application(
        Applicant(kind=a["kind"], name=name, id_number=id_number, phone=None),
        [ProvidedMaterial(m["code"], m["name"], m["provided"], m["original_checked"])
         for m in application["materials"]],
        None,
        now_utc().date(),
    )
    state["result"] = "PASSED" if result.passed else "FAILED"
    del state["application"]  # personal data is kept no longer than the check needs it
    # Material names and codes are the applicant's words: whatever of the applicant they
    # repeat is scrubbed before the reasons travel (unsealed) and reach Track.
    parties = (name, id_number)
    if result.passed:
        checks = [{**asdict(c), "check": scrub(c.check, parties), "detail": scrub(c.detail, parties)}
                  for c in result.checks]
        body = {"application_id": key, "checks": checks}
        return Outcome(state=state, finished=True, emits=[Emit(VERIFIED, topics.APPLICATION_VERIFIED_EVENT, key, body)])
    body = {"application_id": key, "reasons": scrub_all(result.reasons, parties),
            "missing_materials": scrub_all(result.missing_materials, parties)}
    return Outcome(state=state, finished=True,
                   emits=[Emit(VERIFIED, topics.APPLICATION_VERIFICATION_FAILED_EVENT, key, body)])


def make_handlers(cipher: PiiCipher) -> dict[str, Handler]:
    async def on_received(event: Event, state: dict | None) -> Outcome:
        return _verify(event.key, {**(state or {}), "application": event.payload}, cipher)

    async def on_routed(event: Event, state: dict | None) -> Outcome:
        return _verify(event.key, {**(state or {}), "routed": event.payload}, cipher)

    async def on_unroutable(event: Event, state: dict | None) -> Outcome:
        # Never verified, so the file's personal data is not needed: keep none of it.
        kept = {k: v for k, v in (state or {}).items() if k != "application"}
        return Outcome(state={**kept, "result": "UNROUTABLE"}, finished=True)

    return {
        topics.APPLICATION_RECEIVED_EVENT: on_received,
        topics.APPLICATION_ROUTED_EVENT: on_routed,
        topics.APPLICATION_UNROUTABLE_EVENT: on_unroutable,
    }
