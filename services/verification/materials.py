"""How each required material of a matter is satisfied, from the sharing catalogue. Pure.

A required material is satisfied, in this order of preference:
- by a 告知承诺 commitment: the applicant promised it, a later check is scheduled;
- by shared evidence: a provider's record confirms what the applicant declared;
- by an originals check at the receiving window, only where sharing cannot confirm it
  (no shared evidence for it, no record, no approved demand);
- or, not essential (or 容缺 with a promised date), it is deferred: accepted, the result waits.
Otherwise it is missing, or its original was not checked: the applicant supplements it.
A record that contradicts the declaration fails the material, whatever else was provided.

Outcomes: VERIFIED; SUPPLEMENT_REQUIRED with the full list at once (补正 asks once);
FAILED with the reason per material (a contradiction is not fixed by more paper).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from services.verification.domain import ProvidedMaterial, RequiredMaterial
from tongban.sharing.governance import SharingCatalogue

# how a material was satisfied
SHARED = "SHARED"
ORIGINAL = "ORIGINAL"
COMMITMENT = "COMMITMENT"
DEFERRED = "DEFERRED"
# what is wrong with one
CONTRADICTED = "CONTRADICTED"
MISSING = "MISSING"
ORIGINAL_NOT_CHECKED = "ORIGINAL_NOT_CHECKED"
# outcomes
VERIFIED = "VERIFIED"
SUPPLEMENT_REQUIRED = "SUPPLEMENT_REQUIRED"
FAILED = "FAILED"

# the verdicts an evidence answer can carry; NOT_ALLOWED: the provider refused the query
MATCH, NO_MATCH, NOT_FOUND, NOT_ALLOWED = "MATCH", "NO_MATCH", "NOT_FOUND", "NOT_ALLOWED"


@dataclass(frozen=True)
class EvidenceAnswer:
    verdict: str
    mismatched: tuple[str, ...] = ()
    reference: str = ""
    provider: str = ""


@dataclass(frozen=True)
class Finding:
    code: str
    satisfied_by: str | None  # SHARED, ORIGINAL, COMMITMENT, DEFERRED; None if not satisfied
    problem: str | None  # CONTRADICTED, MISSING, ORIGINAL_NOT_CHECKED
    detail: str
    reference: str = ""


def evidence_needed(required: Sequence[RequiredMaterial], commitments: Collection[str], subject: str,
                    catalogue: SharingCatalogue) -> list[str]:
    """The evidence types to query: those standing in for a required material that is not
    committed, for this kind of applicant."""
    kinds = (catalogue.for_material(r.code, subject) for r in required if not committed(r, commitments))
    return list(dict.fromkeys(k.type for k in kinds if k is not None))


def committed(r: RequiredMaterial, commitments: Collection[str]) -> bool:
    """Replaced by a 告知承诺 commitment: promised, and the catalogue allows it for this material."""
    return r.code in commitments and r.commitment


def declared_values(evidence_declared: Sequence[str], name: str, places: Mapping[str, str],
                    home_division: str) -> dict[str, str]:
    """What the applicant declared, in the terms an evidence type compares: the household
    and insured places from ApplicationReceived v2 `places`, else the home division."""
    known = {"name": name,
             "household_division": places.get("HOUSEHOLD") or home_division,
             "insured_division": places.get("INSURED_BEFORE") or places.get("INSURED_AFTER") or home_division}
    return {f: known[f] for f in evidence_declared if f in known}


def judge(required: Sequence[RequiredMaterial], provided: Sequence[ProvidedMaterial], commitments: Collection[str],
          deferred: Collection[str], subject: str, answers: Mapping[str, EvidenceAnswer],
          catalogue: SharingCatalogue) -> list[Finding]:
    given = {m.code: m for m in provided if m.provided}
    return [_judge_one(r, given.get(r.code), commitments, deferred, subject, answers, catalogue) for r in required]


def _judge_one(r: RequiredMaterial, given: ProvidedMaterial | None, commitments: Collection[str],
               deferred: Collection[str], subject: str, answers: Mapping[str, EvidenceAnswer],
               catalogue: SharingCatalogue) -> Finding:
    if committed(r, commitments):
        return Finding(r.code, COMMITMENT, None, "告知承诺: a later check is scheduled")
    kind = catalogue.for_material(r.code, subject)
    answer = answers.get(kind.type) if kind else None
    if kind and answer and answer.verdict == MATCH:
        return Finding(r.code, SHARED, None, f"{kind.type} confirmed by {kind.provider}", answer.reference)
    if kind and answer and answer.verdict == NO_MATCH:
        fields = ", ".join(answer.mismatched) or "the declaration"
        return Finding(r.code, None, CONTRADICTED,
                       f"{r.name}: the {kind.type} record of {kind.provider} does not confirm the declared {fields}",
                       answer.reference)
    if given is not None and given.original_checked:
        return Finding(r.code, ORIGINAL, None, "original checked at the receiving window")
    if not r.essential or r.code in deferred:
        return Finding(r.code, DEFERRED, None, "容缺: accepted, the result waits for it")
    if given is not None:
        return Finding(r.code, None, ORIGINAL_NOT_CHECKED,
                       f"{r.name}: sharing cannot confirm it and its original was not checked")
    return Finding(r.code, None, MISSING, f"{r.name} is missing")


def outcome(findings: Sequence[Finding], formal_checks_failed: bool) -> str:
    if formal_checks_failed or any(f.problem == CONTRADICTED for f in findings):
        return FAILED
    if any(f.problem is not None for f in findings):
        return SUPPLEMENT_REQUIRED
    return VERIFIED
