"""Scrub personal data out of free text: pure functions, no I/O.

Free text is whatever a person or a partner system typed and Tongban passes on: partner
reasons, material names, comments, and any message built from them (dead-letter reasons,
gRPC error details, logs, span events). Before such text leaves the service that holds it
(on a topic that is not sealed, in Track, a log line, an error), it goes through `scrub`:

- resident ID numbers (GB 11643: 17 digits and a check character), whatever their check
  character says, so a mistyped number is caught too;
- unified social credit codes (GB 32100: 18 characters of its alphabet, places 3-8 digits);
- phone numbers: mainland mobiles (11 digits from 13-19, with +86/0086/86 and spaces or
  dashes allowed) and landlines with an area code (`0731-80000000`, `(0731)80000000`);
- the names of the application's parties, given by the caller (the applicant, a company),
  exactly and ignoring case and spacing between characters.

A match counts only where it is not part of a longer run of letters or digits, so ids,
trace ids and timestamps are left alone. Scrubbing is deliberately greedy: an 18-digit
reference number in a partner's reason is hidden too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ID_NUMBER = "[ID]"
CREDIT_CODE = "[CREDIT CODE]"
PHONE = "[PHONE]"
NAME = "[NAME]"

_NOT_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_ALNUM_AFTER = r"(?![0-9A-Za-z])"
_RESIDENT_ID = re.compile(_NOT_ALNUM_BEFORE + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])"
                          r"(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + _NOT_ALNUM_AFTER)
# Any 17 digits and a check character, for numbers whose date or region is mistyped.
_ID_SHAPE = re.compile(_NOT_ALNUM_BEFORE + r"\d{17}[\dXx]" + _NOT_ALNUM_AFTER)
_USCC_CHARS = "0-9A-HJ-NP-RTUW-Y"
_CREDIT_CODE = re.compile(_NOT_ALNUM_BEFORE + f"[{_USCC_CHARS}]{{2}}\\d{{6}}[{_USCC_CHARS}]{{10}}"
                          + _NOT_ALNUM_AFTER)
_MOBILE = re.compile(_NOT_ALNUM_BEFORE + r"(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}" + _NOT_ALNUM_AFTER)
_LANDLINE = re.compile(_NOT_ALNUM_BEFORE + r"(?:\(0\d{2,3}\) ?|0\d{2,3}[ -]?)[2-9]\d{6,7}(?:-\d{1,6})?"
                       + _NOT_ALNUM_AFTER)
MIN_NAME_LENGTH = 2  # a one-character "name" would scrub every occurrence of a common character


def _name_pattern(name: str) -> re.Pattern[str] | None:
    chars = [c for c in name if not c.isspace()]
    if len(chars) < MIN_NAME_LENGTH:
        return None
    return re.compile(r"\s*".join(re.escape(c) for c in chars), re.IGNORECASE)


def scrub(text: str | None, names: Iterable[str | None] = ()) -> str:
    """`text` with ID numbers, credit codes, phone numbers and the given names replaced by
    placeholders. None becomes ""."""
    if not text:
        return ""
    patterns = [p for name in sorted({n for n in names if n}, key=len, reverse=True)
                if (p := _name_pattern(name)) is not None]
    for pattern in patterns:  # names first: an ID number given as a "name" goes whole
        text = pattern.sub(NAME, text)
    text = _RESIDENT_ID.sub(ID_NUMBER, text)
    text = _ID_SHAPE.sub(ID_NUMBER, text)
    text = _CREDIT_CODE.sub(CREDIT_CODE, text)
    text = _MOBILE.sub(PHONE, text)
    return _LANDLINE.sub(PHONE, text)


def scrub_all(texts: Iterable[str], names: Iterable[str | None] = ()) -> list[str]:
    names = list(names)
    return [scrub(text, names) for text in texts]
