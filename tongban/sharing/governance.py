"""The rules of governed sharing: the sharing catalogue (供给清单), the demand list (需求清单)
and what a query may be answered with. Pure: no gRPC, no store.

Both lists are data files checked when loaded, so a wrong entry stops a provider (and the
verification service) at start rather than answering queries under a rule nobody approved.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent  # catalogue.toml and demands.toml live next to this module
LEVELS = ("NATIONAL", "PROVINCIAL")
CLASSES = ("UNCONDITIONAL", "CONDITIONAL", "NOT_SHARED")
NOT_SHARED = "NOT_SHARED"
CONDITIONAL = "CONDITIONAL"
REQUESTER_CLASSES = ("BROAD", "NARROW")
NARROW = "NARROW"
ANSWERS = ("VERIFY", "EVIDENCE")
EVIDENCE = "EVIDENCE"
STATUSES = ("APPROVED", "PENDING", "REVOKED")
APPROVED = "APPROVED"
SUBJECTS = ("PERSON", "COMPANY")


class InvalidList(ValueError):
    """A sharing catalogue or demand list entry breaks a rule; the message names it."""


@dataclass(frozen=True)
class Provider:
    id: str
    name: str
    level: str
    correction_working_days: int


@dataclass(frozen=True)
class EvidenceType:
    type: str
    provider: str
    sharing_class: str
    response_seconds: float
    materials: tuple[str, ...]
    declared: tuple[str, ...]
    licence: bool
    subject: str

    @property
    def shared(self) -> bool:
        return self.sharing_class != NOT_SHARED


@dataclass(frozen=True)
class SharingCatalogue:
    providers: dict[str, Provider]
    evidence: dict[str, EvidenceType]

    def for_material(self, material_code: str, subject: str) -> EvidenceType | None:
        """The shared evidence that stands in for a material of this kind of applicant, if any."""
        return next((e for e in self.evidence.values()
                     if material_code in e.materials and e.shared and e.subject == subject), None)

    def served_by(self, provider: str) -> list[EvidenceType]:
        return [e for e in self.evidence.values() if e.provider == provider and e.shared]

    def serving_providers(self) -> list[str]:
        """Providers with shared evidence: those that run a server."""
        return [p for p in self.providers if self.served_by(p)]


@dataclass(frozen=True)
class Demand:
    requester: str
    evidence: str
    matters: frozenset[str]
    legal_basis: str
    answer: str
    status: str
    approved_on: date | None


@dataclass(frozen=True)
class DemandList:
    requester_classes: dict[str, str]
    demands: tuple[Demand, ...]


def load_catalogue(path: Path | None = None) -> SharingCatalogue:
    with open(path or HERE / "catalogue.toml", "rb") as f:
        raw = tomllib.load(f)
    providers = {}
    for pid, p in raw.get("provider", {}).items():
        if p.get("level") not in LEVELS:
            raise InvalidList(f"provider {pid}: level must be one of {', '.join(LEVELS)}")
        if not 0 < p.get("correction_working_days", 0) <= 30:
            raise InvalidList(f"provider {pid}: correction_working_days must be in 1..30")
        providers[pid] = Provider(pid, p["name"], p["level"], p["correction_working_days"])
    evidence: dict[str, EvidenceType] = {}
    claimed: dict[str, str] = {}
    for e in raw.get("evidence", []):
        kind = e["type"]
        problems = []
        if kind in evidence:
            problems.append("declared twice")
        if e["provider"] not in providers:
            problems.append(f"provider {e['provider']} is not declared")
        if e["class"] not in CLASSES:
            problems.append(f"class must be one of {', '.join(CLASSES)}")
        if e["subject"] not in SUBJECTS:
            problems.append(f"subject must be one of {', '.join(SUBJECTS)}")
        if not 0 < e["response_seconds"] <= 60:
            problems.append("response_seconds must be in (0, 60]")
        for code in e["materials"]:
            if code in claimed:
                problems.append(f"material {code} already stands for {claimed[code]}")
            claimed[code] = kind
        if problems:
            raise InvalidList(f"evidence {kind}: " + "; ".join(problems))
        evidence[kind] = EvidenceType(kind, e["provider"], e["class"], float(e["response_seconds"]),
                                      tuple(e["materials"]), tuple(e["declared"]), bool(e["licence"]),
                                      e["subject"])
    return SharingCatalogue(providers, evidence)


def load_demands(catalogue: SharingCatalogue, path: Path | None = None) -> DemandList:
    with open(path or HERE / "demands.toml", "rb") as f:
        raw = tomllib.load(f)
    classes = {}
    for rid, r in raw.get("requester", {}).items():
        if r.get("class") not in REQUESTER_CLASSES:
            raise InvalidList(f"requester {rid}: class must be one of {', '.join(REQUESTER_CLASSES)}")
        classes[rid] = r["class"]
    demands = []
    for n, d in enumerate(raw.get("demand", []), start=1):
        problems = []
        if d["requester"] not in classes:
            problems.append(f"requester {d['requester']} is not declared")
        kind = catalogue.evidence.get(d["evidence"])
        if kind is None:
            problems.append(f"evidence {d['evidence']} is not in the sharing catalogue")
        elif not kind.shared:
            problems.append(f"evidence {d['evidence']} is not shared")
        if d["answer"] not in ANSWERS:
            problems.append(f"answer must be one of {', '.join(ANSWERS)}")
        if d["answer"] == EVIDENCE and classes.get(d["requester"]) == NARROW:
            problems.append("a NARROW requester is only ever answered yes/no")
        if d["status"] not in STATUSES:
            problems.append(f"status must be one of {', '.join(STATUSES)}")
        if d["status"] == APPROVED and not isinstance(d.get("approved_on"), date):
            problems.append("an APPROVED demand needs its approved_on date")
        if not d["matters"] or not d["legal_basis"].strip():
            problems.append("matters and legal_basis are required")
        if problems:
            raise InvalidList(f"demand {n} ({d['requester']} × {d['evidence']}): " + "; ".join(problems))
        demands.append(Demand(d["requester"], d["evidence"], frozenset(d["matters"]), d["legal_basis"],
                              d["answer"], d["status"], d.get("approved_on")))
    return DemandList(classes, tuple(demands))


@dataclass(frozen=True)
class Query:
    requester: str
    matter_code: str
    evidence_type: str
    purpose: str
    legal_basis: str
    want_evidence: bool


@dataclass(frozen=True)
class Ruling:
    """What a query may be answered with: refused (with why), yes/no, or the evidence."""

    allowed: bool
    with_evidence: bool
    reason: str


def rule(catalogue: SharingCatalogue, demands: DemandList, query: Query, today: date) -> Ruling:
    """Answer only under an approved demand for this requester, evidence and matter; a
    conditional evidence only under the legal basis the demand was approved for; the
    evidence itself only where the demand allows it and the requester is not narrow."""
    kind = catalogue.evidence.get(query.evidence_type)
    if kind is None or not kind.shared:
        return Ruling(False, False, f"evidence {query.evidence_type} is not shared")
    if not query.purpose.strip() or not query.legal_basis.strip():
        return Ruling(False, False, "a query names its purpose and legal basis")
    demand = next((d for d in demands.demands
                   if d.requester == query.requester and d.evidence == query.evidence_type
                   and query.matter_code in d.matters and d.status == APPROVED
                   and d.approved_on is not None and d.approved_on <= today), None)
    if demand is None:
        return Ruling(False, False, f"no approved demand of {query.requester} for {query.evidence_type} "
                                    f"in matter {query.matter_code}")
    if kind.sharing_class == CONDITIONAL and query.legal_basis != demand.legal_basis:
        return Ruling(False, False, f"{query.evidence_type} is shared on condition: the query must name "
                                    "the legal basis its demand was approved under")
    narrow = demands.requester_classes.get(query.requester) == NARROW
    return Ruling(True, query.want_evidence and demand.answer == EVIDENCE and not narrow, "approved demand")


def demand_for(demands: DemandList, requester: str, evidence_type: str, matter_code: str) -> Demand | None:
    """The approved demand a requester would query under (for it to name the legal basis)."""
    return next((d for d in demands.demands if d.requester == requester and d.evidence == evidence_type
                 and matter_code in d.matters and d.status == APPROVED), None)
