"""Personal fields are sealed by the schema's marks, open only with the key, and tampering
or a missing key is an error that never shows the value."""

import base64
from datetime import UTC, datetime

import pytest

from tongban.codec import SchemaRegistry
from tongban.config import ConfigError, load_settings
from tongban.events import encode_event
from tongban.pii import PREFIX, PiiCipher, PiiError, new_key_line, parse_keys

REGISTRY = SchemaRegistry.load()
OLD, NEW = parse_keys(new_key_line("k1")), parse_keys(new_key_line("k2"))


def test_seal_and_open_round_trip_and_sealing_twice_changes_nothing():
    cipher = PiiCipher(OLD)
    sealed = cipher.seal("420106198506123417")
    assert sealed.startswith(PREFIX + "k1:") and "420106198506123417" not in sealed
    assert cipher.seal(sealed) == sealed
    assert cipher.open(sealed) == "420106198506123417"
    assert cipher.seal("张三") != cipher.seal("张三"), "a fresh nonce each time"


def test_a_rotated_key_still_opens_old_values_and_seals_with_the_new_one():
    old_value = PiiCipher(OLD).seal("长沙市天心区")
    rotated = PiiCipher({**NEW, **OLD})
    assert rotated.open(old_value) == "长沙市天心区"
    assert rotated.seal("x").startswith(PREFIX + "k2:")


def test_tampering_or_a_missing_key_fails_without_showing_the_value():
    sealed = PiiCipher(OLD).seal("13800000000")
    raw = bytearray(base64.b64decode(sealed.rsplit(":", 1)[1]))
    raw[-1] ^= 1
    tampered = sealed.rsplit(":", 1)[0] + ":" + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(PiiError) as failed:
        PiiCipher(OLD).open(tampered)
    assert "13800000000" not in str(failed.value)
    with pytest.raises(PiiError, match="no key 'k1'"):
        PiiCipher(NEW).open(sealed)


def test_the_schema_marks_decide_what_is_sealed():
    record = {"application_id": "TB1", "matter_code": "KSTB-MKT-01", "channel": "WINDOW",
              "receiving_division": "430103", "home_division": "440300",
              "applicant": {"kind": "COMPANY", "name": "长沙示例科技有限公司", "id_number": "91430100MA4L000000",
                            "phone": None},
              "materials": [{"code": "ARTICLES", "name": "公司章程", "provided": True, "original_checked": True}],
              "delivery_method": "POST", "postal_address": "长沙市", "submitted_at": datetime(2026, 1, 5, tzinfo=UTC)}
    sealed = REGISTRY.map_pii("tongban.application.ApplicationReceived", record, PiiCipher(OLD).seal)
    assert all(sealed["applicant"][f].startswith(PREFIX) for f in ("name", "id_number"))
    assert sealed["postal_address"].startswith(PREFIX)
    assert sealed["applicant"]["phone"] is None
    assert {k: v for k, v in sealed.items() if k not in ("applicant", "postal_address")} == \
        {k: v for k, v in record.items() if k not in ("applicant", "postal_address")}


def test_keys_are_checked_and_services_fail_fast_without_one(tmp_path):
    with pytest.raises(ValueError):
        parse_keys("k1=" + base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="no personal-data key"):
        load_settings("intake", {"TONGBAN_PII_KEY_FILE": str(tmp_path / "missing")})
    assert load_settings("intake", {"TONGBAN_PII_KEYS": new_key_line("k9")}).pii_cipher().seal("x")[7:9] == "k9"


PHONE, NAME, ID_NUMBER, ADDRESS = "13800000000", "张三", "420106198506123417", "长沙市天心区芙蓉中路100号"


def encode_sealed(event_type: str, payload: dict, cipher: PiiCipher) -> bytes:
    _, data = encode_event(REGISTRY, event_type, payload, cause_id="c1", correlation_id="TB1",
                           source_system="test", cipher=cipher)
    return data


def opened(data: bytes, cipher: PiiCipher) -> dict:
    name, record = REGISTRY.decode(data)
    return REGISTRY.map_pii(name, record, cipher.open)


def test_an_applicants_phone_name_and_id_number_and_the_address_are_sealed_on_the_bus():
    cipher = PiiCipher(OLD)
    payload = {"application_id": "TB1", "matter_code": "KSTB-MKT-01", "channel": "WINDOW",
               "receiving_division": "430103", "home_division": "440300",
               "applicant": {"kind": "PERSON", "name": NAME, "id_number": ID_NUMBER, "phone": PHONE},
               "materials": [], "delivery_method": "POST", "postal_address": ADDRESS,
               "submitted_at": datetime(2026, 1, 5, tzinfo=UTC)}
    data = encode_sealed("tongban.application.ApplicationReceived", payload, cipher)
    for plaintext in (PHONE, NAME, ID_NUMBER, ADDRESS):
        assert plaintext.encode() not in data, f"{plaintext} travels in the clear"
    record = opened(data, cipher)
    assert record["applicant"] == payload["applicant"]
    assert record["postal_address"] == ADDRESS


def test_a_postal_dispatchs_recipient_address_and_phone_are_sealed_on_the_bus():
    cipher = PiiCipher(OLD)
    payload = {"dispatch_id": "DSP1", "application_id": "TB1", "recipient_name": NAME, "address": ADDRESS,
               "phone": PHONE, "item": "result LIC-1"}
    data = encode_sealed("tongban.delivery.PostalDispatch", payload, cipher)
    for plaintext in (PHONE, NAME, ADDRESS):
        assert plaintext.encode() not in data, f"{plaintext} travels in the clear"
    record = opened(data, cipher)
    assert (record["recipient_name"], record["address"], record["phone"]) == (NAME, ADDRESS, PHONE)
    assert record["item"] == "result LIC-1", "fields that are not personal stay as they are"


def test_a_missing_phone_stays_missing_when_sealed():
    cipher = PiiCipher(OLD)
    payload = {"dispatch_id": "DSP1", "application_id": "TB1", "recipient_name": NAME, "address": ADDRESS,
               "phone": None, "item": "result"}
    assert opened(encode_sealed("tongban.delivery.PostalDispatch", payload, cipher), cipher)["phone"] is None


def test_a_raters_comment_and_a_callers_words_are_sealed_on_the_bus():
    cipher = PiiCipher(OLD)
    at = datetime(2026, 1, 5, tzinfo=UTC)
    rating = {"rating_id": "R1", "application_id": "TB1", "matter_code": "KSTB-MKT-01", "division_code": "430102",
              "party": "420000", "level": 5, "channel": "ONLINE", "comment": f"{NAME} {PHONE}", "rated_at": at}
    order = {"work_order_id": "WO1", "stage": "RECEIVED", "matter_code": "KSTB-MKT-01", "division_code": "430102",
             "application_id": None, "category": "COMPLAINT", "content": f"{NAME} {PHONE}", "occurred_at": at}
    for event_type, payload in (("tongban.feedback.ServiceRating", rating),
                                ("tongban.feedback.HotlineWorkOrder", order)):
        data = encode_sealed(event_type, payload, cipher)
        assert PHONE.encode() not in data and NAME.encode() not in data
        assert f"{NAME} {PHONE}" in opened(data, cipher).values()
