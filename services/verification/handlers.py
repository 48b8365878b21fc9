"""Verification service.

Inputs:  ApplicationReceived (applicant, materials, places, commitments) and ApplicationRouted
         (the decision) on tongban.application.received / .routed, in either order; timers
         `evidence-retry` (a provider was down) and `commitment-check` (告知承诺 checked later).
Outputs: on tongban.application.verified, once both inputs are in and every provider needed
         has answered: ApplicationVerified (v2: how each material was satisfied) or
         ApplicationVerificationFailed (v2: FAILED with the reason per material, or
         SUPPLEMENT_REQUIRED with the full list); EvidenceAwaited while a provider is down.
State:   per application: the file (sealed, until the check is done), the routing decision,
         the providers' answers so far, the attempt count, committed materials to check later.
Rules:   services.verification.domain (identity numbers), .materials (each required
         material: shared evidence, original, commitment, missing), tongban.sharing
         (the sharing catalogue and demand list). The provider calls are made through the
         `Evidence` port (services.verification.sharing in production).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from datetime import timedelta
from typing import Any, Protocol

from services.verification import materials as rules
from services.verification.domain import (
    FAILED,
    Applicant,
    ProvidedMaterial,
    RequiredMaterial,
    verify_application,
)
from services.verification.sharing import Answer, NotAllowed, Unavailable
from tongban import telemetry, topics
from tongban.events import now_utc
from tongban.handling import Emit, Event, Handler, Outcome, Timer
from tongban.pii import PiiCipher
from tongban.scrub import scrub, scrub_all
from tongban.sharing.governance import SharingCatalogue

log = logging.getLogger(__name__)

VERIFIED = topics.APPLICATION_VERIFIED
INPUTS = [topics.APPLICATION_RECEIVED, topics.APPLICATION_ROUTED]
EVIDENCE_RETRY = "evidence-retry"
COMMITMENT_CHECK = "commitment-check"
# A provider that is down is asked again after 5 s, then 10, 20 ... at most every 5 minutes.
FIRST_RETRY_SECONDS = 5
MAX_RETRY_SECONDS = 300
# 告知承诺: the promised material is checked against the records this long after acceptance.
COMMITMENT_CHECK_DAYS = 20


class Evidence(Protocol):
    catalogue: SharingCatalogue

    async def query(self, application_id: str, matter_code: str, evidence_type: str, subject_id: str,
                    declared: dict[str, str]) -> Answer: ...


def retry_delay(attempt: int) -> timedelta:
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** (attempt - 1), MAX_RETRY_SECONDS))


def make_handlers(cipher: PiiCipher, evidence: Evidence,
                  matters: dict[str, tuple[RequiredMaterial, ...]]) -> tuple[dict[str, Handler], dict[str, Handler]]:
    """(event handlers, timer handlers). `matters`: each matter's required materials."""
    catalogue = evidence.catalogue

    def opened(key: str, applicant: dict) -> tuple[str, str]:
        # Values are bound to where intake sealed them: this application's ApplicationReceived.
        name, id_number = (cipher.open(applicant[f], record=topics.APPLICATION_RECEIVED_EVENT,
                                       path=f"applicant.{f}", subject=key) for f in ("name", "id_number"))
        return name, id_number

    async def ask(key: str, application: dict, kinds: list[str], name: str, id_number: str,
                  answers: dict[str, dict]) -> list[str]:
        """Ask each provider needed and not yet answered, at once; returns the evidence types
        whose provider could not answer now."""
        todo = [k for k in kinds if k not in answers]

        async def one(kind: str) -> tuple[str, dict | None]:
            declared = rules.declared_values(catalogue.evidence[kind].declared, name, application.get("places") or {},
                                             application["home_division"])
            try:
                a = await evidence.query(key, application["matter_code"], kind, id_number, declared)
            except Unavailable:
                return kind, None
            except NotAllowed as exc:
                telemetry.log(log, logging.WARNING, "evidence query refused", application_id=key, evidence_type=kind,
                              reason=str(exc))
                return kind, asdict(rules.EvidenceAnswer(rules.NOT_ALLOWED))
            return kind, asdict(rules.EvidenceAnswer(a.verdict, a.mismatched, a.reference, a.provider))

        waiting = []
        for kind, answer in await asyncio.gather(*(one(k) for k in todo)):
            if answer is None:
                waiting.append(kind)
            else:
                answers[kind] = answer
        return waiting

    async def verify(key: str, state: dict) -> Outcome:
        """Verify once the file and the routing decision are both in and the providers needed
        have answered; while one is down, wait on a timer (others' work goes on)."""
        if "result" in state:  # already concluded (or unroutable): keep no personal data
            state.pop("application", None)
            return Outcome(state=state, finished=not state.get("commitments_due"))
        if "application" not in state or "routed" not in state:
            return Outcome(state=state)
        application = state["application"]
        a = application["applicant"]
        name, id_number = opened(key, a)
        required = matters.get(application["matter_code"])
        provided = [ProvidedMaterial(m["code"], m["name"], m["provided"], m["original_checked"])
                    for m in application["materials"]]
        applicant = Applicant(kind=a["kind"], name=name, id_number=id_number, phone=None)
        parties = (name, id_number)
        if required is None:  # a matter the catalogue does not list: every material named must be there
            return _conclude_without_catalogue(key, state, verify_application(applicant, provided, None,
                                                                              now_utc().date()), parties)
        formal = verify_application(applicant, [], [], now_utc().date())
        commitments = set(application.get("commitments") or ())
        answers = state.setdefault("answers", {})
        if formal.passed:  # an invalid number is not worth a provider's time
            kinds = rules.evidence_needed(required, commitments, a["kind"], catalogue)
            waiting = await ask(key, application, kinds, name, id_number, answers)
            if waiting:
                return _wait(key, state, waiting)
        findings = rules.judge(required, provided, commitments, set(application.get("deferred_materials") or ()),
                               a["kind"], {k: rules.EvidenceAnswer(**{**v, "mismatched": tuple(v["mismatched"])})
                                           for k, v in answers.items()}, catalogue)
        result = rules.outcome(findings, not formal.passed)
        state["result"] = result
        state.pop("awaiting", None)
        timers = []
        promised = sorted(r.code for r in required if rules.committed(r, commitments))
        if result == rules.VERIFIED and promised:
            # 告知承诺: what was promised is checked against the records later; until then the
            # aggregate stays (without personal data but the sealed values, to query with).
            state["commitments_due"] = promised
            state["subject"] = {"kind": a["kind"], "id_number": a["id_number"], "name": a["name"]}
            timers.append(Timer(COMMITMENT_CHECK, now_utc() + timedelta(days=COMMITMENT_CHECK_DAYS)))
        state["matter_code"] = application["matter_code"]
        state["home_division"] = application["home_division"]
        state["places"] = application.get("places") or {}
        del state["application"]  # personal data is kept no longer than the check needs it
        emit = _verdict(key, result, formal.checks, findings, parties)
        return Outcome(state=state, finished=not timers, emits=[emit], timers=timers, cancel_timers=[EVIDENCE_RETRY])

    def _wait(key: str, state: dict, waiting: list[str]) -> Outcome:
        attempt = state.get("attempt", 0) + 1
        state["attempt"] = attempt
        due = now_utc() + retry_delay(attempt)
        providers = sorted({catalogue.evidence[k].provider for k in waiting})
        emits = []
        if state.get("awaiting") != waiting:  # say so once per change of what is awaited
            state["awaiting"] = waiting
            emits.append(Emit(VERIFIED, topics.EVIDENCE_AWAITED_EVENT, key,
                              {"application_id": key, "providers": providers, "evidence_types": waiting,
                               "next_attempt_at": due}, qualifier=str(attempt)))
        return Outcome(state=state, emits=emits, timers=[Timer(EVIDENCE_RETRY, due)])

    async def on_received(event: Event, state: dict | None) -> Outcome:
        return await verify(event.key, {**(state or {}), "application": event.payload})

    async def on_routed(event: Event, state: dict | None) -> Outcome:
        return await verify(event.key, {**(state or {}), "routed": event.payload})

    async def on_unroutable(event: Event, state: dict | None) -> Outcome:
        # Never verified, so the file's personal data is not needed: keep none of it.
        kept = {k: v for k, v in (state or {}).items() if k != "application"}
        return Outcome(state={**kept, "result": "UNROUTABLE"}, finished=True)

    async def on_retry(event: Event, state: dict | None) -> Outcome:
        return await verify(event.key, dict(state or {}))

    async def on_commitment_check(event: Event, state: dict | None) -> Outcome:
        """The later check of 告知承诺: ask the records for what was promised. The outcome is
        kept with the application (for the deciding department); a provider still down is
        asked again later."""
        state = dict(state or {})
        subject = state.get("subject")
        if subject is None:
            return Outcome(state=state, finished=True)
        name, id_number = opened(event.key, subject)
        required = [r for r in matters.get(state["matter_code"], ()) if r.code in state.get("commitments_due", ())]
        kinds = rules.evidence_needed(required, (), subject["kind"], catalogue)
        application = {"matter_code": state["matter_code"], "home_division": state["home_division"],
                       "places": state["places"]}
        answers: dict[str, dict] = {}
        waiting = await ask(event.key, application, kinds, name, id_number, answers)
        if waiting:
            return Outcome(state=state, timers=[Timer(COMMITMENT_CHECK, now_utc() + retry_delay(1))])
        state["commitment_check"] = {k: v["verdict"] for k, v in answers.items()}
        del state["subject"]
        return Outcome(state=state, finished=True)

    handlers: dict[str, Handler] = {
        topics.APPLICATION_RECEIVED_EVENT: on_received,
        topics.APPLICATION_ROUTED_EVENT: on_routed,
        topics.APPLICATION_UNROUTABLE_EVENT: on_unroutable,
    }
    return handlers, {EVIDENCE_RETRY: on_retry, COMMITMENT_CHECK: on_commitment_check}


def _verdict(key: str, result: str, checks: Any, findings: list[rules.Finding], parties: tuple[str, str]) -> Emit:
    # Material names and codes are the applicant's words: whatever of the applicant they
    # repeat is scrubbed before the reasons travel (unsealed) and reach Track.
    if result == rules.VERIFIED:
        body = {"application_id": key,
                "checks": [{**asdict(c), "check": scrub(c.check, parties), "detail": scrub(c.detail, parties)}
                           for c in checks],
                "materials": [{"code": scrub(f.code, parties), "satisfied_by": f.satisfied_by or "",
                               "detail": scrub(f.detail, parties), "evidence_reference": f.reference}
                              for f in findings]}
        return Emit(VERIFIED, topics.APPLICATION_VERIFIED_EVENT, key, body)
    problems = [f for f in findings if f.problem is not None]
    reasons = [c.detail for c in checks if c.outcome == FAILED] + [f.detail for f in problems]
    body = {"application_id": key, "outcome": result, "reasons": scrub_all(reasons, parties),
            "missing_materials": scrub_all([f.code for f in problems if f.problem != rules.CONTRADICTED], parties),
            "materials": [{"code": scrub(f.code, parties), "problem": f.problem, "reason": scrub(f.detail, parties)}
                          for f in problems]}
    return Emit(VERIFIED, topics.APPLICATION_VERIFICATION_FAILED_EVENT, key, body)


def _conclude_without_catalogue(key: str, state: dict, result: Any, parties: tuple[str, str]) -> Outcome:
    state["result"] = "PASSED" if result.passed else "FAILED"
    del state["application"]
    if result.passed:
        emit = _verdict(key, rules.VERIFIED, result.checks, [], parties)
    else:
        emit = Emit(VERIFIED, topics.APPLICATION_VERIFICATION_FAILED_EVENT, key,
                    {"application_id": key, "outcome": rules.FAILED, "reasons": scrub_all(result.reasons, parties),
                     "missing_materials": scrub_all(result.missing_materials, parties), "materials": []})
    return Outcome(state=state, finished=True, emits=[emit])
