"""Free text loses ID numbers, credit codes, phone numbers and the parties' names; ids,
references and our own wording stay as they are."""

import pytest
from stdnum.cn import ric, uscc

from tongban.scrub import CREDIT_CODE, ID_NUMBER, NAME, PHONE, scrub, scrub_all

RESIDENT_ID = "42010619850612341" + ric.calc_check_digit("42010619850612341X")
CREDIT = "91430100MA4L00000" + uscc.calc_check_digit("91430100MA4L00000")


@pytest.mark.parametrize(("text", "expected"), [
    (f"申请人身份证{RESIDENT_ID}不符合", f"申请人身份证{ID_NUMBER}不符合"),
    (f"ID {RESIDENT_ID[:-1]}x.", f"ID {ID_NUMBER}."),  # lower-case check character
    ("号码420106198502303417有误", f"号码{ID_NUMBER}有误"),  # a mistyped date is still an ID number
    ("990106198506123417", ID_NUMBER),  # whatever the region code
    (f"企业{CREDIT}未年检", f"企业{CREDIT_CODE}未年检"),
    ("电话13800000000", f"电话{PHONE}"),
    ("call 138 0000 0000 or 138-0000-0000", f"call {PHONE} or {PHONE}"),
    ("+86 13912345678; 0086-13912345678; 8613912345678", f"{PHONE}; {PHONE}; {PHONE}"),
    ("座机0731-80000000转", f"座机{PHONE}转"),
    ("(0731)80000000 / 010 62345678-123", f"{PHONE} / {PHONE}"),
])
def test_numbers_that_identify_a_person_or_a_company_are_replaced(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "TB0123456789ABCDEF0123",  # application id
    "DSP0123456789ABCDEF",  # dispatch id
    "EMS0A1B2C3D4E result LIC-0A1B2C3D4E5F",
    "trace 0af7651916cd43dd8448eb211c80319c span 00f067aa0ba902b7",
    "5f1d1a52-4f0e-4a39-9a53-7d3c1a6c2b10",
    "offset 12345678901, partition 2, at 1767225600000",
    "materials: at most 50 items (got 100000)",
    "resident ID number check character does not match",
    "KSTB-MKT-01 430102 420106",
    "x13800000000y",  # digits inside a longer token are not a phone number
    "",
])
def test_ids_references_and_our_own_words_are_left_alone(text):
    assert scrub(text) == text


def test_the_parties_names_are_replaced_however_spaced_or_cased():
    names = ["张三", "长沙示例科技有限公司", "Zhang San"]
    assert scrub("张三 的委托书", names) == f"{NAME} 的委托书"
    assert scrub("张 三来过", names) == f"{NAME}来过"
    assert scrub("长沙示例科技有限公司申请", names) == f"{NAME}申请"
    assert scrub("signed by ZHANG SAN", names) == f"signed by {NAME}"
    assert scrub("张三丰", ["张三丰", "张三"]) == NAME, "the longer name goes whole"


def test_one_character_names_and_missing_names_are_ignored():
    assert scrub("王先生", ["王", None, ""]) == "王先生"


def test_none_and_lists():
    assert scrub(None) == ""
    assert scrub_all(["张三 13800000000", "ok"], ["张三"]) == [f"{NAME} {PHONE}", "ok"]
