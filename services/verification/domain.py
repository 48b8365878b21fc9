"""Verification rules: identity numbers and materials, before the file is accepted.

Details say what is wrong without repeating the applicant's name or number, because
they travel in events, logs and 补正 notices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from stdnum.cn import ric, uscc
from stdnum.exceptions import (
    InvalidChecksum,
    InvalidComponent,
    InvalidFormat,
    InvalidLength,
)

PERSON = "PERSON"
COMPANY = "COMPANY"

PASSED = "PASSED"
WARNING = "WARNING"
FAILED = "FAILED"

# GB 32100 character set (digits and capitals without I, O, S, V, Z); places 3-8 are
# the registering division code. Checked here rather than by uscc.validate, which also
# demands digits in places 1-2 and so rejects the letter registration authorities the
# standard allows (A, N, Y; e.g. N for village collective economic organisations).
_USCC_CHARS = "0-9A-HJ-NP-RTUW-Y"
_USCC_SHAPE = re.compile(f"[{_USCC_CHARS}]{{2}}[0-9]{{6}}[{_USCC_CHARS}]{{10}}")


@dataclass(frozen=True)
class Applicant:
    kind: str
    name: str
    id_number: str
    phone: str | None


@dataclass(frozen=True)
class ProvidedMaterial:
    code: str
    name: str
    provided: bool
    original_checked: bool


@dataclass(frozen=True)
class RequiredMaterial:
    """What the matter asks for; verification keeps its own copy of the catalogue's
    shape so that it does not depend on the routing service."""

    code: str
    name: str
    essential: bool
    commitment: bool = True  # a 告知承诺 may replace it (MatterChanged v2 says per material)


@dataclass(frozen=True)
class VerificationCheck:
    check: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class VerificationResult:
    checks: tuple[VerificationCheck, ...]
    missing_materials: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(c.outcome != FAILED for c in self.checks)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it did not pass: the details of the failed checks."""
        return tuple(c.detail for c in self.checks if c.outcome == FAILED)


def verify_application(
    applicant: Applicant,
    materials: Sequence[ProvidedMaterial],
    required: Sequence[RequiredMaterial] | None,
    today: date,
) -> VerificationResult:
    checks = [_check_name(applicant.name)]
    if applicant.kind == PERSON:
        checks.append(_check_resident_id(applicant.id_number, today))
    elif applicant.kind == COMPANY:
        checks.append(_check_credit_code(applicant.id_number))
    else:
        checks.append(VerificationCheck("applicant_kind", FAILED, "kind must be PERSON or COMPANY"))
    material_checks = _check_provided(materials) if required is None else _check_required(materials, required)
    checks += material_checks
    # 补正 asks once for everything missing, so every missing material is listed.
    missing = tuple(dict.fromkeys(c.check.removeprefix("material:") for c in material_checks if c.outcome == FAILED))
    return VerificationResult(tuple(checks), missing)


def _check_name(name: str) -> VerificationCheck:
    if name.strip():
        return VerificationCheck("applicant_name", PASSED, "name given")
    return VerificationCheck("applicant_name", FAILED, "applicant name is empty")


def _check_resident_id(number: str, today: date) -> VerificationCheck:
    """GB 11643: length, check digit, birth date and the region code at birth."""

    def failed(detail: str) -> VerificationCheck:
        return VerificationCheck("resident_id", FAILED, detail)

    try:
        ric.validate(number)
    except (InvalidLength, InvalidFormat):
        return failed("resident ID number must be 17 digits and a check character")
    except InvalidChecksum:
        return failed("resident ID number check character does not match")
    except InvalidComponent:
        try:
            ric.get_birth_date(number)
        except InvalidComponent:
            return failed("resident ID number holds an impossible birth date")
        return failed("resident ID number region code did not exist at birth")
    # stdnum accepts any calendar date; a birth date after today is a typing error
    if ric.get_birth_date(number) > today:
        return failed("resident ID number holds a birth date in the future")
    return VerificationCheck("resident_id", PASSED, "resident ID number is valid")


def _check_credit_code(number: str) -> VerificationCheck:
    """GB 32100. Some early codes fail the check character but are real, so a
    mismatch only warns and staff confirm the code with the registry."""
    code = uscc.compact(number)
    if len(code) != 18:
        return VerificationCheck("credit_code", FAILED, "credit code must have 18 characters")
    if not _USCC_SHAPE.fullmatch(code):
        return VerificationCheck("credit_code", FAILED, "credit code holds characters GB 32100 does not use")
    if code[-1] != uscc.calc_check_digit(code):
        return VerificationCheck(
            "credit_code",
            WARNING,
            "credit code check character does not match; confirm with the registry",
        )
    return VerificationCheck("credit_code", PASSED, "credit code is valid")


def _check_required(
    materials: Sequence[ProvidedMaterial], required: Sequence[RequiredMaterial]
) -> list[VerificationCheck]:
    provided = {m.code: m for m in materials if m.provided}
    checks = []
    for r in required:
        check = f"material:{r.code}"
        if r.code in provided:
            checks.append(_provided_check(provided[r.code]))
        elif r.essential:
            checks.append(VerificationCheck(check, FAILED, f"{r.name} is missing"))
        else:
            # 容缺受理: accepted now, the result waits for the promised material
            checks.append(VerificationCheck(check, WARNING, f"{r.name} is missing; accepted, result waits for it"))
    return checks


def _check_provided(materials: Sequence[ProvidedMaterial]) -> list[VerificationCheck]:
    """Without the matter's list, every material the file names must be there."""
    return [
        _provided_check(m) if m.provided else VerificationCheck(f"material:{m.code}", FAILED, f"{m.name} is missing")
        for m in materials
    ]


def _provided_check(material: ProvidedMaterial) -> VerificationCheck:
    detail = "provided, original checked" if material.original_checked else "provided"
    return VerificationCheck(f"material:{material.code}", PASSED, detail)
