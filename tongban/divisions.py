"""GB/T 2260 administrative division codes: which codes are real, and their names.

One table for every service (intake's formal check, routing's places of handling, the
window registry). The data is the Ministry of Civil Affairs list of divisions at county
level and above, kept in `gb2260.tsv` next to this module with its source and edition.
Codes below county level (township 乡镇街道, village 村居 and park codes, 12 digits, the
statistical extension of GB/T 2260) are known when their first 6 digits are: no national
list of them is kept here, so their last 6 digits are checked for shape only.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

EDITION = "MCA 2021-12"
_TABLE = Path(__file__).with_name("gb2260.tsv")


@cache
def _names() -> dict[str, str]:
    names = {}
    for line in _TABLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            code, name = line.split("\t")
            names[code] = name
    return names


def listed() -> dict[str, str]:
    """Every listed code (county level and above) with its name."""
    return dict(_names())


def _well_formed(code: str) -> bool:
    return code.isascii() and code.isdigit() and len(code) in (6, 12)


def is_known(code: str) -> bool:
    """A 6-digit code in the list, or a 12-digit code whose county-level prefix is."""
    return _well_formed(code) and code[:6] in _names()


def county(code: str) -> str:
    """The county-level (6-digit) code of a 6- or 12-digit code."""
    return code[:6]


def name(code: str) -> str | None:
    """The name of the division at the code's county level or above, if known."""
    return _names().get(county(code)) if _well_formed(code) else None


def province(code: str) -> str:
    """The province-level code: 433101 -> 430000."""
    return code[:2] + "0000"


def contains(ancestor: str, code: str) -> bool:
    """Whether `code` lies in `ancestor` (itself included): 430000 contains 433101001001."""
    prefix = county(ancestor)
    while prefix.endswith("00"):
        prefix = prefix[:-2]
    return county(code).startswith(prefix)
