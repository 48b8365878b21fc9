"""The manual-handling queue as operators list it: one entry per file whose result waits for an
operator, in codes and times only.

A file's `manual_reason` is free text that may quote a partner (a wallet's refusal, a
carrier's return reason) and so may hold personal data; the listing gives a reason code
instead, read from the fixed beginnings the channels write (services/delivery/channels/), and
the carrier's return codes only where they look like codes. The text stays with `Pending`,
which answers for one application.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tongban.events import millis

# The beginning of each reason the channels write -> its code (tests drive every channel into
# the queue and find no OTHER).
REASONS = (
    ("no postal address", "NO_POSTAL_ADDRESS"),
    ("returned ", "RETURNED_TOO_OFTEN"),
    ("the address was wrong", "WRONG_ADDRESS_NOT_CORRECTED"),
    ("no window where", "NO_HAND_OVER_WINDOW"),
    ("the transfer to window", "TRANSFER_RETURNED"),
    ("the wallet refused", "WALLET_REFUSED"),
)
OTHER = "OTHER"
MARK = b"MANUAL"  # in the stored bytes of every file in the queue: the runtime decodes only those
CARRIER_CODE = re.compile(r"^[A-Z][A-Z_]{0,39}$")  # WRONG_ADDRESS, REFUSED, NOT_COLLECTED ...


@dataclass(frozen=True)
class Waiting:
    application_id: str
    matter_code: str
    deciding_partner: str
    method: str
    reason_code: str
    return_reasons: tuple[str, ...]
    attempt: int
    since_ms: int  # 0: queued before the time was kept


def reason_code(reason: str) -> str:
    return next((code for start, code in REASONS if reason.startswith(start)), OTHER)


def waiting(key: str, file: dict[str, Any]) -> Waiting | None:
    """The file's entry in the queue, or None when its result is not in manual handling."""
    result = file.get("result") or {}
    if result.get("status") != "MANUAL" or file.get("delivered"):
        return None
    since = result.get("manual_since")
    returns = tuple(r if CARRIER_CODE.match(r) else OTHER for r in result.get("returns", []))
    routed = file.get("routed", {})  # a result goes out only after routing
    return Waiting(application_id=key, matter_code=routed.get("matter_code", ""),
                   deciding_partner=routed.get("deciding_partner", ""),
                   method=result.get("method", ""), reason_code=reason_code(result.get("manual_reason", "")),
                   return_reasons=returns, attempt=result.get("attempt", 0),
                   since_ms=millis(since) if isinstance(since, datetime) else 0)


def oldest_first(entries: list[Waiting]) -> list[Waiting]:
    """Those queued before the time was kept (0) come first: they have waited longest."""
    return sorted(entries, key=lambda e: (e.since_ms, e.application_id))
