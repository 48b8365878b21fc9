"""A provider's own record store and how it answers: compare what the applicant declared
with the record ("verify, don't copy"). Pure: the store is a seeded file read at start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent / "records"

MATCH = "MATCH"
NO_MATCH = "NO_MATCH"
NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True)
class Licence:
    """An electronic licence, by its identifier in the issuing e-licence library."""

    licence_id: str
    issuer: str
    issued_on: str


@dataclass(frozen=True)
class Record:
    evidence: str
    subject_id: str
    fields: dict[str, str]
    licence: Licence | None = None


@dataclass(frozen=True)
class Verdict:
    verdict: str
    mismatched: tuple[str, ...] = ()
    record: Record | None = field(default=None, compare=False)


class RecordStore:
    def __init__(self, records: Sequence[Record]) -> None:
        self._by_key = {(r.evidence, r.subject_id): r for r in records}
        if len(self._by_key) != len(records):
            raise ValueError("a subject has two records of one evidence type")

    @classmethod
    def load(cls, provider: str, directory: Path = HERE) -> RecordStore:
        with open(directory / f"{provider}.json", encoding="utf-8") as f:
            raw = json.load(f)
        return cls([Record(r["evidence"], r["subject_id"], dict(r["fields"]),
                           Licence(**r["licence"]) if r.get("licence") else None) for r in raw["records"]])

    def evidence_types(self) -> set[str]:
        return {evidence for evidence, _ in self._by_key}

    def find(self, evidence: str, subject_id: str) -> Record | None:
        return self._by_key.get((evidence, subject_id))


def verify(store: RecordStore, evidence: str, subject_id: str, declared: Mapping[str, str],
           compared: Sequence[str]) -> Verdict:
    """MATCH when every compared field the applicant declared agrees with the record;
    NO_MATCH names the fields that disagree (names only, never values); NOT_FOUND when
    there is no record, so sharing cannot confirm it either way."""
    record = store.find(evidence, subject_id)
    if record is None:
        return Verdict(NOT_FOUND)
    mismatched = tuple(f for f in compared if f in declared and record.fields.get(f) != declared[f])
    return Verdict(NO_MATCH if mismatched else MATCH, mismatched, record)
