"""Electronic licence: the issuing department signed the licence into its e-licence library
and names it in the decision; delivery asks the applicant's wallet to record it (the file
stays with the issuer) and the result is delivered when the wallet confirms."""

from __future__ import annotations

import re
from typing import Any

from stdnum.iso7064 import mod_37_36

from services.delivery.channels.base import (
    Channel,
    Context,
    Delivered,
    ResultState,
    Step,
    attempt_of,
    manual,
    progress,
)
from services.delivery.matters import PAPER_LICENCE
from tongban import topics
from tongban.handling import Emit, Rejected

# Tongban's form of an e-licence identifier: EL-<issuing division>-<serial><check>, the check
# character over division and serial by ISO 7064 MOD 37,36 (python-stdnum). It is this
# project's convention for the partners' libraries, not a national standard's layout.
LICENCE_ID = re.compile(r"^EL-(?P<division>\d{6})-(?P<serial>[0-9A-Z]{6,24})(?P<check>[0-9A-Z])$")


def licence_problem(reference: str | None, deciding_partner: str) -> str | None:
    """Why `reference` is not an e-licence identifier the deciding authority issued (None: it is)."""
    match = LICENCE_ID.match(reference or "")
    if match is None:
        return "the decision names no e-licence identifier of the form EL-<division>-<serial><check>"
    if not mod_37_36.is_valid(match["division"] + match["serial"] + match["check"]):
        return "the e-licence identifier's check character is wrong"
    if not match["division"].startswith(_prefix(deciding_partner)):
        return f"the e-licence was not issued within the deciding authority {deciding_partner}'s divisions"
    return None


def licence_id(division: str, serial: str) -> str:
    """The identifier an issuing department gives (used by the simulated authorities)."""
    return f"EL-{division}-{serial}{mod_37_36.calc_check_digit(division + serial)}"


def _prefix(division: str) -> str:
    """A division code's significant digits: 440000 covers 44xxxx, 370100 covers 3701xx."""
    stripped = division
    while stripped.endswith("00") and len(stripped) > 2:
        stripped = stripped[:-2]
    return stripped


class Electronic(Channel):
    method = "ELECTRONIC"

    def refusal(self, ctx: Context) -> str | None:
        if ctx.matter.result_type == PAPER_LICENCE:
            return f"ELECTRONIC refused: matter {ctx.matter_code} issues its result on paper only"
        return None

    def check_result(self, ctx: Context) -> None:
        problem = licence_problem(ctx.result_reference, ctx.deciding_partner)
        if problem:
            raise Rejected(problem)

    def start(self, ctx: Context, previous: ResultState | None) -> Step:
        result = attempt_of(ctx, previous, self.method, (previous or {}).get("attempt", 0) + 1,
                            licence_id=ctx.result_reference, status="SENT_TO_WALLET")
        holder = ctx.holder()
        # Opened here, sealed again by the runtime for the wallet only.
        body = {"dispatch_id": result["dispatch_id"], "application_id": ctx.application_id,
                "licence_id": ctx.result_reference, "issuing_partner": ctx.deciding_partner,
                "holder_kind": holder["kind"], "holder_id_number": holder["id_number"]}
        return Step(result, emits=[Emit(topics.WALLET_ENTRIES, topics.WALLET_ENTRY_EVENT, ctx.application_id, body,
                                        qualifier=str(result["attempt"]))])

    def on_wallet(self, ctx: Context, result: ResultState, receipt: dict[str, Any]) -> Step:
        if receipt["dispatch_id"] != result["dispatch_id"] or result["status"] != "SENT_TO_WALLET":
            return Step(result)  # answered already
        if receipt["status"] == "RECORDED":
            done = {**result, "status": "RECORDED"}
            return Step(done, delivered=Delivered(receipt["dispatch_id"], None, receipt["at"]))
        refused = {**result, "status": "WALLET_REFUSED"}
        reason = f"the wallet refused the licence: {receipt['reason'] or 'no reason given'}"
        step = manual(ctx, refused, reason)
        return Step(step.result, emits=[progress(ctx, refused, "WALLET_REFUSED", reason), *step.emits])


CHANNEL = Electronic()
