"""The simulated carrier and wallet as independent parties: the carrier dispatches each
parcel once (its own store), reports tracking, returns what its test addresses tell it to,
fails once when told, and hands 结果转送 parcels to the window; the wallet records what it
can read."""

import json

import pytest

from sim.carrier import carrier, wallet
from sim.partners import PartnerFault
from tests.pii_parties import cipher, seal

DISPATCH = "tongban.delivery.PostalDispatch"


def parcel(address: str, dispatch_id: str = "DSP1", purpose: str = "TO_APPLICANT", window_id: str = "") -> dict:
    return {"dispatch_id": dispatch_id, "application_id": "TB1", "recipient_name": "sealed", "phone": None,
            "address": seal(address, DISPATCH, "address", "TB1", ["ems"]), "item": "result",
            "purpose": purpose, "window_id": window_id, "attempt": 1}


def ledger_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_parcel_handed_twice_is_dispatched_once_and_reported_alike(tmp_path):
    ledger = tmp_path / "carrier.jsonl"
    respond = carrier(cipher("ems"), ledger)
    first, again = respond(DISPATCH, parcel("长沙市示例路1号")), respond(DISPATCH, parcel("长沙市示例路1号"))
    assert [(r.payload["status"], r.qualifier) for r in first] == [
        ("ACCEPTED", "ACCEPTED"), ("IN_TRANSIT", "IN_TRANSIT"), ("DELIVERED", "DELIVERED")]
    assert [r.qualifier for r in again] == [r.qualifier for r in first]
    assert [line["physical"] for line in ledger_lines(ledger)] == [True, False]
    restarted = carrier(cipher("ems"), ledger)  # its store survives a restart
    restarted(DISPATCH, parcel("长沙市示例路1号"))
    assert [line["physical"] for line in ledger_lines(ledger)] == [True, False, False]


@pytest.mark.parametrize(("address", "reason"), [("长沙市查无此址", "WRONG_ADDRESS"), ("长沙市拒收路", "REFUSED"),
                                                 ("长沙市无人签收路", "NOT_COLLECTED")])
def test_the_address_tells_the_carrier_to_return_the_parcel(address, reason):
    *_, ending = carrier(cipher("ems"))(DISPATCH, parcel(address))
    assert (ending.payload["status"], ending.payload["return_reason"]) == ("RETURNED", reason)


def test_a_carrier_that_fails_after_dispatching_does_not_dispatch_again(tmp_path):
    ledger = tmp_path / "carrier.jsonl"
    respond = carrier(cipher("ems"), ledger)
    with pytest.raises(PartnerFault):
        respond(DISPATCH, parcel("长沙市承运故障路"))
    assert respond(DISPATCH, parcel("长沙市承运故障路"))[-1].payload["status"] == "DELIVERED"
    assert [line["physical"] for line in ledger_lines(ledger)] == [True, False]


def test_a_result_for_the_window_is_handed_to_it_and_a_delay_holds_the_last_report():
    handed: list[tuple[str, str]] = []
    replies = carrier(cipher("ems"), None, lambda a, w: handed.append((a, w)), delay=2.5)(
        DISPATCH, parcel("window HN-430103-KSTB-01", purpose="TO_WINDOW", window_id="HN-430103-KSTB-01"))
    assert handed == [("TB1", "HN-430103-KSTB-01")]
    assert [r.delay for r in replies] == [0.0, 0.0, 2.5]


def test_the_wallet_records_a_licence_for_a_holder_it_can_read_and_refuses_otherwise():
    entry = {"dispatch_id": "DSP1", "application_id": "TB1", "licence_id": "EL-440000-X", "issuing_partner": "440000",
             "holder_kind": "PERSON"}
    readable = seal("430102199003071234", "tongban.delivery.WalletEntry", "holder_id_number", "TB1", ["wallet"])
    [recorded] = wallet(cipher("wallet"))("tongban.delivery.WalletEntry", {**entry, "holder_id_number": readable})
    assert (recorded.topic, recorded.payload["status"]) == ("tongban.partner.wallet.receipts", "RECORDED")
    foreign = seal("430102199003071234", "tongban.delivery.WalletEntry", "holder_id_number", "TB1", ["ems"])
    [refused] = wallet(cipher("wallet"))("tongban.delivery.WalletEntry", {**entry, "holder_id_number": foreign})
    assert (refused.payload["status"], refused.payload["reason"]) == ("REFUSED", "holder unreadable")
