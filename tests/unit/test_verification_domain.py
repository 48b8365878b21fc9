from datetime import date

import pytest
from stdnum.cn import ric, uscc

from services.verification.domain import (
    FAILED,
    PASSED,
    WARNING,
    Applicant,
    ProvidedMaterial,
    RequiredMaterial,
    VerificationCheck,
    VerificationResult,
    verify_application,
)

TODAY = date(2025, 9, 22)
NAME = "张三"


def resident_id(first17: str) -> str:
    """A made-up number with a correct check character (stdnum wants a placeholder)."""
    return first17 + ric.calc_check_digit(first17 + "X")


def credit_code(first17: str) -> str:
    return first17 + uscc.calc_check_digit(first17)


VALID_ID = resident_id("43010219900307123")  # 长沙市芙蓉区, born 1990-03-07
VALID_USCC = credit_code("91430102MA4L0000X")


def wrong_check(number: str) -> str:
    return number[:-1] + ("1" if number[-1] != "1" else "2")


def person(id_number: str = VALID_ID, name: str = NAME) -> Applicant:
    return Applicant("PERSON", name, id_number, "13800000000")


def company(code: str = VALID_USCC) -> Applicant:
    return Applicant("COMPANY", "某某科技有限公司", code, None)


def verify(applicant: Applicant, materials=(), required=None) -> VerificationResult:
    return verify_application(applicant, list(materials), required, TODAY)


def check(result: VerificationResult, name: str) -> VerificationCheck:
    return next(c for c in result.checks if c.check == name)


def material(code: str, provided: bool = True, original_checked: bool = False):
    return ProvidedMaterial(code, f"材料{code}", provided, original_checked)


# --- identity --------------------------------------------------------------


def test_valid_person_passes():
    result = verify(person())
    assert result.passed
    assert check(result, "resident_id").outcome == PASSED
    assert result.reasons == ()
    assert result.missing_materials == ()


def test_resident_id_with_x_check_character():
    number = next(n for n in (resident_id(f"4331011985123100{i}") for i in range(10)) if n.endswith("X"))
    assert verify(person(number)).passed
    assert verify(person(number.lower())).passed


@pytest.mark.parametrize(
    ("number", "why"),
    [
        (wrong_check(VALID_ID), "check character"),
        (VALID_ID[:-1], "17 digits"),
        ("43010219900307A234", "17 digits"),
        (resident_id("43010219900230123"), "birth date"),  # 30 February
        (resident_id("99010219900307123"), "region code"),
        (resident_id("43010220300307123"), "future"),
        ("", "17 digits"),
    ],
)
def test_invalid_resident_id_fails(number, why):
    result = verify(person(number))
    assert not result.passed
    id_check = check(result, "resident_id")
    assert id_check.outcome == FAILED
    assert why in id_check.detail
    assert result.reasons == (id_check.detail,)


def test_details_never_contain_the_number_or_name():
    for number in (VALID_ID, wrong_check(VALID_ID), VALID_ID[:-1]):
        for c in verify(person(number)).checks:
            assert number not in c.detail
            assert NAME not in c.detail
    for code in (VALID_USCC, wrong_check(VALID_USCC), VALID_USCC[:-2]):
        for c in verify(company(code)).checks:
            assert code not in c.detail


def test_empty_name_fails():
    result = verify(person(name="  "))
    assert not result.passed
    assert check(result, "applicant_name").outcome == FAILED


def test_unknown_applicant_kind_fails():
    result = verify(Applicant("ROBOT", NAME, VALID_ID, None))
    assert check(result, "applicant_kind").outcome == FAILED


def test_valid_credit_code_passes():
    assert uscc.is_valid("91110000600037341L")
    assert verify(company("91110000600037341L")).passed
    result = verify(company())
    assert result.passed
    assert check(result, "credit_code").outcome == PASSED


def test_credit_code_with_letter_registration_authority_passes():
    # N = agriculture and rural affairs (e.g. a village collective economic organisation)
    code = credit_code("N2433101MA00000A0")
    assert not uscc.is_valid(code)  # stdnum wants digits in places 1-2
    assert check(verify(company(code)), "credit_code").outcome == PASSED


def test_credit_code_bad_check_character_only_warns():
    result = verify(company(wrong_check(VALID_USCC)))
    assert result.passed
    assert check(result, "credit_code").outcome == WARNING


@pytest.mark.parametrize(
    "code",
    [
        VALID_USCC[:-1],  # too short
        VALID_USCC + "0",  # too long
        "91430102MA4L0000I0",  # I is not in the set
        "9143O102MA4L000010",  # letter in the division code
        "91430102MA4L0000-0",  # separators are removed, so this is too short
    ],
)
def test_credit_code_wrong_length_or_charset_fails(code):
    result = verify(company(code))
    assert not result.passed
    assert check(result, "credit_code").outcome == FAILED


def test_credit_code_lowercase_is_accepted():
    assert check(verify(company(VALID_USCC.lower())), "credit_code").outcome == PASSED


# --- materials ---------------------------------------------------------------

REQUIRED = (
    RequiredMaterial("RESIDENT_ID", "居民身份证", True),
    RequiredMaterial("APPLICATION_FORM", "申请表", True),
    RequiredMaterial("BUSINESS_LICENCE", "营业执照", False),
)


def test_all_required_materials_provided():
    provided = [
        material("RESIDENT_ID", original_checked=True),
        material("APPLICATION_FORM"),
        material("BUSINESS_LICENCE"),
    ]
    result = verify(person(), provided, REQUIRED)
    assert result.passed
    assert check(result, "material:RESIDENT_ID").detail == "provided, original checked"


def test_every_missing_essential_material_is_listed_at_once():
    result = verify(person(), [material("APPLICATION_FORM", provided=False)], REQUIRED)
    assert not result.passed
    assert result.missing_materials == ("RESIDENT_ID", "APPLICATION_FORM")
    assert check(result, "material:RESIDENT_ID").outcome == FAILED
    assert len(result.reasons) == 2


def test_missing_non_essential_material_is_a_warning():
    provided = [material("RESIDENT_ID"), material("APPLICATION_FORM")]
    result = verify(person(), provided, REQUIRED)
    assert result.passed
    assert result.missing_materials == ()
    assert check(result, "material:BUSINESS_LICENCE").outcome == WARNING


def test_materials_beyond_the_required_list_are_ignored():
    provided = [material("RESIDENT_ID"), material("APPLICATION_FORM")]
    provided.append(material("EXTRA", provided=False))
    result = verify(person(), provided, REQUIRED)
    assert result.passed


def test_without_required_list_any_unprovided_material_is_missing():
    provided = [material("A"), material("B", provided=False), material("C", False)]
    result = verify(person(), provided)
    assert not result.passed
    assert result.missing_materials == ("B", "C")
    assert check(result, "material:A").outcome == PASSED


def test_without_required_list_and_no_materials_passes():
    assert verify(person()).passed


def test_identity_and_material_failures_are_reported_together():
    result = verify(person(wrong_check(VALID_ID)), [material("A", provided=False)])
    assert len(result.reasons) == 2
    assert result.missing_materials == ("A",)
