"""Personal fields are sealed by the schema's marks for the parties that may read them, bound to
their place; they open only there and only for those parties; keys rotate; v1 values still
open; failures never show the value."""

import base64
import stat
from datetime import UTC, datetime

import pytest

from tests.pii_parties import cipher, seal, seal_v1
from tongban import pii_policy
from tongban.codec import SchemaRegistry
from tongban.config import ConfigError, load_settings
from tongban.events import encode_event
from tongban.ops import pii as ops
from tongban.ops.topics import load_document
from tongban.pii import (
    SUITES,
    V2,
    Key,
    Keyring,
    PiiCipher,
    PiiError,
    Sealed,
    is_sealed,
    key_line,
    new_key,
    new_key_line,
    open_record,
    parse_keys,
    suite_available,
)

REGISTRY = SchemaRegistry.load()
RECEIVED = "tongban.application.ApplicationReceived"
ASSIGNED = "tongban.partner.MatterAssigned"
PHONE, NAME, ID_NUMBER, ADDRESS = "13800000000", "张三", "420106198506123417", "长沙市天心区芙蓉中路100号"
AT = {"record": RECEIVED, "path": "applicant.id_number", "subject": "TB1"}


@pytest.fixture(autouse=True)
def no_v1_key_file(tmp_path, monkeypatch):
    """Key set-up adopts var/pii.keys (v1) when there is one; tests start from none."""
    monkeypatch.setattr(pii_policy, "LEGACY_KEY_FILE", tmp_path / "no-v1.keys")


def sealed_id(subject: str = "TB1", path: str = "applicant.id_number", record: str = RECEIVED,
              recipients=("verification", "delivery")) -> str:
    return seal(ID_NUMBER, record, path, subject, recipients)


# ---------------------------------------------------------------------------- sealing and opening
def test_a_value_opens_for_each_recipient_where_it_was_sealed():
    value = sealed_id()
    assert value.startswith(V2 + "aes256gcm:")
    assert ID_NUMBER not in value
    assert cipher("verification").open(value, **AT) == ID_NUMBER
    assert cipher("delivery").open(value, **AT) == ID_NUMBER
    assert sealed_id() != sealed_id(), "a fresh data key and nonces each time"


def test_what_delivery_seals_for_one_partner_no_other_partner_opens():
    delivery = cipher("delivery", seals_for=["420000", "440000", "ems"])
    at = {"record": ASSIGNED, "path": "applicant.id_number", "subject": "TB1"}
    for_hubei = delivery.seal(ID_NUMBER, **at, recipients=["420000"])
    assert cipher("420000").open(for_hubei, **at) == ID_NUMBER
    for other in ("440000", "ems", "verification", "intake", "12345"):
        with pytest.raises(PiiError, match="sealed for 420000, not for"):
            cipher(other).open(for_hubei, **at)
    with pytest.raises(PiiError, match="sealed for 420000, not for delivery"):
        delivery.open(for_hubei, **at)


def test_a_partner_holds_no_key_to_seal_for_another_partner():
    with pytest.raises(PiiError, match="holds no key to seal for party 440000"):
        cipher("420000").seal(NAME, record=ASSIGNED, path="applicant.name", subject="TB1", recipients=["440000"])
    with pytest.raises(PiiError, match="holds no key"):
        PiiCipher().seal(NAME, record=ASSIGNED, path="applicant.name", subject="TB1", recipients=["440000"])


@pytest.mark.parametrize("where", [
    {"subject": "TB2"},                                # copied into another application
    {"path": "applicant.name"},                        # into another field
    {"path": "applicant.phone"},
    {"record": ASSIGNED},                              # into another record
])
def test_a_value_moved_to_another_place_fails_to_open(where):
    with pytest.raises(PiiError, match="sealed for another field or application") as failed:
        cipher("verification").open(sealed_id(), **{**AT, **where})
    assert ID_NUMBER not in str(failed.value)


def edited(value: str, **changes) -> str:
    parsed = Sealed.parse(value)
    return Sealed(**{**parsed.__dict__, **changes}).text()


@pytest.mark.parametrize("forge", [
    lambda v: edited(v, subject="TB2"),                                     # header rewritten to the new place
    lambda v: edited(v, path="applicant.name"),
    lambda v: edited(v, recipients=Sealed.parse(v).recipients[:1]),          # a recipient dropped
    lambda v: edited(v, body=Sealed.parse(v).body[:-1] + bytes([Sealed.parse(v).body[-1] ^ 1])),
    lambda v: edited(v, recipients=tuple((p, k, w[:-1] + bytes([w[-1] ^ 1])) for p, k, w in
                                         Sealed.parse(v).recipients)),
])
def test_an_edited_header_wrap_or_body_fails_the_tag_without_showing_the_value(forge):
    forged = forge(sealed_id())
    place = {**AT, **{k: v for k, v in (("subject", Sealed.parse(forged).subject),
                                         ("path", Sealed.parse(forged).path))}}
    with pytest.raises(PiiError, match="failed to open") as failed:
        cipher("verification").open(forged, **place)
    assert ID_NUMBER not in str(failed.value)


def test_plaintext_where_a_sealed_value_belongs_and_sealing_twice_are_refused():
    with pytest.raises(PiiError, match=r"applicant.id_number of .* is not sealed"):
        cipher("verification").open(ID_NUMBER, **AT)
    with pytest.raises(PiiError, match="already holds a sealed value"):
        cipher("intake", seals_for=["verification"]).seal(sealed_id(), **AT, recipients=["verification"])
    for garbage in ("pii:v2:nope", "pii:v2:xx:a:b:c:d:e", "pii:v9:zzz"):
        with pytest.raises(PiiError):
            cipher("verification").open(garbage, **AT)


# ---------------------------------------------------------------------------- keys and rotation
def rotated(party: str, keys: dict) -> PiiCipher:
    return PiiCipher(Keyring.of(party, keys))


def test_a_new_key_seals_old_keys_still_open_and_a_retired_key_opens_nothing():
    old = new_key("k1")
    fresh = new_key("k2")
    before = PiiCipher(Keyring.of("ems", {"k1": old}))
    value = before.seal(ADDRESS, record="tongban.delivery.PostalDispatch", path="address", subject="TB1",
                        recipients=["ems"])
    after = rotated("ems", {"k2": fresh, "k1": old})
    where = {"record": "tongban.delivery.PostalDispatch", "path": "address", "subject": "TB1"}
    assert after.open(value, **where) == ADDRESS
    assert after.stale(value)
    resealed = after.reseal(value)
    assert Sealed.parse(resealed).recipients[0][:2] == ("ems", "k2")
    assert not after.stale(resealed)
    retired = rotated("ems", {"k2": fresh})
    assert retired.open(resealed, **where) == ADDRESS
    with pytest.raises(PiiError, match="no key k1 of party ems"):
        retired.open(value, **where)


def v1(value: str, key_id: str, secret: bytes) -> str:
    return seal_v1(value, Key(key_id, "aes-256-gcm", secret))


def test_v1_values_still_open_where_a_key_with_their_id_is_configured():
    shared = new_key("k1")
    old = v1(NAME, "k1", shared.secret)
    migrated = PiiCipher(Keyring.of("420000", {"k9": new_key("k9"), "k1": shared}))
    assert migrated.open(old, **AT) == NAME, "v1 carries no place: it opens wherever its key is"
    with pytest.raises(PiiError, match="no key 'k1'"):
        cipher("420000").open(old, **AT)
    assert migrated.stale(old)
    fresh = migrated.reseal(old, record=RECEIVED, path="applicant.name", subject="TB1", recipients=["420000"])
    assert fresh.startswith(V2)
    assert migrated.open(fresh, record=RECEIVED, path="applicant.name", subject="TB1") == NAME


def test_keys_are_parsed_with_their_suite_and_checked():
    aes, sm4 = new_key("a1"), new_key("s1", "sm4-gcm")
    keys = parse_keys(f"# a comment, with a comma\n{key_line(aes)},{key_line(sm4)}\n")
    assert [(k.key_id, k.suite) for k in keys.values()] == [("a1", "aes-256-gcm"), ("s1", "sm4-gcm")]
    assert key_line(sm4).startswith("s1=sm4:")
    malformed = "each key must be"
    for bad, problem in (("k1=" + base64.b64encode(b"short").decode(), malformed),
                         ("k1=sm4:" + base64.b64encode(bytes(32)).decode(), malformed),
                         ("k-1=" + base64.b64encode(bytes(32)).decode(), malformed),
                         (f"{key_line(aes)}\n{key_line(aes)}", "key id a1 appears twice"),
                         ("# none", "no key given")):
        with pytest.raises(ValueError, match=problem):
            parse_keys(bad)


# ---------------------------------------------------------------------------- SM4-GCM
def test_sm4_gcm_is_openssls_and_matches_the_rfc_8998_test_vector():
    if not suite_available("sm4-gcm"):
        pytest.skip("this OpenSSL build offers no SM4-GCM")
    suite = SUITES["sm4-gcm"]
    key, iv = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), bytes.fromhex("00001234567800000000ABCD")
    plaintext = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
                              "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA")
    ad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    out = suite.encrypt(key, iv, plaintext, ad)
    assert out.hex().upper() == ("17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
                                 "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
                                 "83DE3541E4C2B58177E065A9BF7B62EC")
    assert suite.decrypt(key, iv, out, ad) == plaintext


def test_an_sm4_keyring_seals_and_opens_and_an_aes_key_does_not_open_an_sm4_value():
    if not suite_available("sm4-gcm"):
        pytest.skip("this OpenSSL build offers no SM4-GCM")
    sm4 = {"s1": new_key("s1", "sm4-gcm")}
    writer = PiiCipher(Keyring.of("delivery", {"d1": new_key("d1", "sm4-gcm")}, "sm4-gcm", seals_for={"ems": sm4}))
    where = {"record": "tongban.delivery.PostalDispatch", "path": "address", "subject": "TB1"}
    value = writer.seal(ADDRESS, **where, recipients=["ems"])
    assert value.startswith(V2 + "sm4gcm:")
    assert PiiCipher(Keyring.of("ems", sm4, "sm4-gcm")).open(value, **where) == ADDRESS
    with pytest.raises(PiiError, match="not a sm4-gcm key"):
        PiiCipher(Keyring.of("ems", {"s1": new_key("s1")})).open(value, **where)


def test_the_cipher_is_chosen_by_configuration(tmp_path):
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path), "TONGBAN_PII_KEYS": new_key_line("k1")}
    assert load_settings("verification", env).pii_cipher().suite.name == "aes-256-gcm"
    with pytest.raises(ConfigError, match="TONGBAN_PII_CIPHER must be one of"):
        load_settings("verification", {**env, "TONGBAN_PII_CIPHER": "des"})
    if suite_available("sm4-gcm"):
        with pytest.raises(ConfigError, match="no sm4-gcm key"):
            load_settings("verification", {**env, "TONGBAN_PII_CIPHER": "sm4-gcm"})
        sm4 = {**env, "TONGBAN_PII_CIPHER": "sm4-gcm", "TONGBAN_PII_KEYS": new_key_line("s1", "sm4-gcm")}
        assert load_settings("verification", sm4).pii_cipher().suite.name == "sm4-gcm"


# ---------------------------------------------------------------------------- who holds which key
def test_feedback_holds_no_key_routing_only_its_own_and_a_keyed_service_fails_fast_without_its_own(tmp_path):
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path), "TONGBAN_PII_KEYS": new_key_line("k9")}
    keyring = load_settings("feedback", env).pii_keys
    assert keyring.party is None
    assert not keyring.opening
    assert not keyring.sealing
    # routing's key is for its own command topic (the review queue's requests), nothing else
    routing = load_settings("routing", env).pii_keys
    assert (routing.party, set(routing.opening), set(routing.sealing)) == ("routing", {"routing"}, {"routing"})
    with pytest.raises(ConfigError, match="no personal-data key for party verification"):
        load_settings("verification", {"TONGBAN_PII_KEY_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="TONGBAN_PII_KEY_FILE names"):
        load_settings("verification", {"TONGBAN_PII_KEY_FILE": str(tmp_path / "missing")})
    # A single party's keys by variable; the keys it seals for come from the key directory.
    assert load_settings("verification", env).pii_keys.sealing["verification"].key_id == "k9"
    with pytest.raises(ConfigError, match="party verification"):
        load_settings("intake", env)


def test_each_process_holds_its_own_key_and_the_current_keys_of_those_it_seals_for(tmp_path):
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path)}
    ops.ensure_keys(env)
    intake = load_settings("intake", env).pii_keys
    assert (intake.party, set(intake.opening), set(intake.sealing)) == (
        "intake", {"intake"}, {"intake", "verification", "delivery"})
    delivery = load_settings("delivery", env).pii_keys
    assert set(delivery.opening) == {"delivery"}
    feeds = set(load_document()["feeds"])  # the hotline and the rating channels: delivery seals for none
    assert set(delivery.sealing) == {"delivery", "ems", *pii_policy.partners()} - feeds
    partner = load_settings("partner-420000", env).pii_keys
    assert (partner.party, set(partner.opening), set(partner.sealing)) == ("420000", {"420000"}, {"420000"})


def test_the_policy_names_who_may_open_each_topics_personal_data():
    assert pii_policy.recipients("tongban.application.received") == ("verification", "delivery")
    assert pii_policy.recipients("tongban.partner.420000.assignments") == ("420000",)
    assert pii_policy.recipients("tongban.partner.ems.dispatches") == ("ems",)
    assert pii_policy.recipients("tongban.commands.tongban-intake") == ("intake",)
    assert pii_policy.recipients("tongban.feedback.ratings") == ("intake",)
    assert pii_policy.recipients("tongban.feedback.workorders") == ("12345",)
    for other in ("tongban.application.routed", "tongban.partner.420000.decisions", "tongban.dlq.tongban-intake",
                  "tongban.feedback.flags"):
        assert pii_policy.recipients(other) == ()


# ---------------------------------------------------------------------------- records and events
APPLICATION = {"application_id": "TB1", "matter_code": "KSTB-MKT-01", "channel": "WINDOW",
               "receiving_division": "430103", "home_division": "440300",
               "applicant": {"kind": "PERSON", "name": NAME, "id_number": ID_NUMBER, "phone": PHONE},
               "materials": [{"code": "ARTICLES", "name": "公司章程", "provided": True, "original_checked": True}],
               "delivery_method": "POST", "postal_address": ADDRESS, "submitted_at": datetime(2026, 1, 5, tzinfo=UTC)}
INTAKE = cipher("intake", seals_for=["verification", "delivery"])


def encode(event_type: str, payload: dict, writer: PiiCipher | None, recipients=(), correlation_id: str = "TB1"):
    return encode_event(REGISTRY, event_type, payload, cause_id="c1", correlation_id=correlation_id,
                        source_system="test", cipher=writer, recipients=recipients)[1]


def test_the_schema_marks_decide_what_is_sealed_and_each_value_is_bound_to_its_path():
    data = encode(RECEIVED, APPLICATION, INTAKE, ("verification", "delivery"))
    for plaintext in (PHONE, NAME, ID_NUMBER, ADDRESS):
        assert plaintext.encode() not in data, f"{plaintext} travels in the clear"
    _, record = REGISTRY.decode(data)
    assert {Sealed.parse(record["applicant"][f]).path for f in ("name", "id_number", "phone")} == {
        "applicant.name", "applicant.id_number", "applicant.phone"}
    assert record["materials"] == APPLICATION["materials"], "fields that are not personal stay as they are"
    opened = open_record(REGISTRY, RECEIVED, record, cipher("delivery"), "TB1")
    assert opened["applicant"] == APPLICATION["applicant"]
    assert opened["postal_address"] == ADDRESS


def test_an_event_is_bound_to_its_correlation_id():
    _, record = REGISTRY.decode(encode(RECEIVED, APPLICATION, INTAKE, ("verification", "delivery")))
    with pytest.raises(PiiError, match="another field or application"):
        open_record(REGISTRY, RECEIVED, record, cipher("delivery"), "TB2")


def test_a_missing_value_stays_missing_and_needs_no_seal():
    payload = {"dispatch_id": "DSP1", "application_id": "TB1", "recipient_name": NAME, "address": ADDRESS,
               "phone": None, "item": "result"}
    delivery = cipher("delivery", seals_for=["ems"])
    _, record = REGISTRY.decode(encode("tongban.delivery.PostalDispatch", payload, delivery, ("ems",)))
    assert record["phone"] is None
    assert is_sealed(record["address"])
    rating = {"rating_id": "R1", "application_id": "TB1", "matter_code": "KSTB-MKT-01", "division_code": "430102",
              "party": "420000", "level": 5, "channel": "ONLINE", "comment": None, "rated_at": datetime.now(UTC)}
    assert encode("tongban.feedback.ServiceRating", rating, None)


def test_an_event_with_personal_data_is_never_encoded_unsealed():
    with pytest.raises(PiiError, match=r"applicant.name, applicant.id_number, applicant.phone, postal_address "
                                       r"would travel unsealed"):
        encode(RECEIVED, APPLICATION, None)
    with pytest.raises(PiiError, match="would travel unsealed"):
        encode(RECEIVED, APPLICATION, INTAKE, recipients=())
    with pytest.raises(PiiError, match="already holds a sealed value"):
        encode(RECEIVED, {**APPLICATION, "postal_address": sealed_id()}, INTAKE, ("verification",))


def test_a_raters_comment_and_a_callers_words_are_sealed_for_who_took_them_down():
    at = datetime(2026, 1, 5, tzinfo=UTC)
    rating = {"rating_id": "R1", "application_id": "TB1", "matter_code": "KSTB-MKT-01", "division_code": "430102",
              "party": "420000", "level": 5, "channel": "ONLINE", "comment": f"{NAME} {PHONE}", "rated_at": at}
    order = {"work_order_id": "WO1", "stage": "RECEIVED", "matter_code": "KSTB-MKT-01", "division_code": "430102",
             "application_id": None, "category": "COMPLAINT", "content": f"{NAME} {PHONE}", "occurred_at": at}
    for event_type, payload, topic, party in (
            ("tongban.feedback.ServiceRating", rating, "tongban.feedback.ratings", "intake"),
            ("tongban.feedback.HotlineWorkOrder", order, "tongban.feedback.workorders", "12345")):
        data = encode(event_type, payload, cipher(party), pii_policy.recipients(topic))
        assert PHONE.encode() not in data
        assert NAME.encode() not in data
        _, record = REGISTRY.decode(data)
        assert f"{NAME} {PHONE}" in open_record(REGISTRY, event_type, record, cipher(party), "TB1").values()


# ---------------------------------------------------------------------------- the operator's tools
def test_setup_makes_one_private_key_file_per_party_and_adopts_the_v1_key(tmp_path, monkeypatch):
    legacy = tmp_path / "pii.keys"
    shared = new_key("k1")
    legacy.write_text(f"# old\n{key_line(shared)}\n")
    monkeypatch.setattr(pii_policy, "LEGACY_KEY_FILE", legacy)
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path / "pii")}
    done = ops.ensure_keys(env)
    assert len(done) == len(pii_policy.parties())
    assert ops.ensure_keys(env) == [], "run twice, nothing more to do"
    for party in pii_policy.parties():
        path = tmp_path / "pii" / f"{party}.keys"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        keys = list(parse_keys(path.read_text()).values())
        assert keys[1].secret == shared.secret
        assert keys[0].key_id != "k1"
    assert stat.S_IMODE((tmp_path / "pii").stat().st_mode) == 0o700
    secrets = {parse_keys((tmp_path / "pii" / f"{p}.keys").read_text()) and
               next(iter(parse_keys((tmp_path / "pii" / f"{p}.keys").read_text()).values())).secret
               for p in pii_policy.parties()}
    assert len(secrets) == len(pii_policy.parties()), "one key per party"


def test_rotate_and_retire_keep_the_current_key_first_and_refuse_to_retire_it(tmp_path):
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path)}
    ops.ensure_keys(env)
    first = next(iter(pii_policy.read_party_keys("ems", env)))
    second = ops.rotate("ems", env)
    assert list(pii_policy.read_party_keys("ems", env)) == [second, first]
    with pytest.raises(SystemExit, match="current key"):
        ops.retire("ems", second, env)
    ops.retire("ems", first, env)
    assert list(pii_policy.read_party_keys("ems", env)) == [second]


def test_reseal_rewrites_an_archived_state_with_the_current_keys_v1_values_included(tmp_path):
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path)}
    ops.ensure_keys(env)
    shared = new_key("k1")
    for party in ("verification", "delivery"):  # both read v1 data before the migration
        path = pii_policy.key_file(party, env)
        path.write_text(path.read_text() + key_line(shared) + "\n")
    before = PiiCipher(pii_policy.operator_keyring(env))
    stale_v2 = before.seal(PHONE, record=RECEIVED, path="applicant.phone", subject="TB1",
                           recipients=["verification", "delivery"])
    state = {"received": {"applicant": {"kind": "PERSON", "name": v1(NAME, "k1", shared.secret),
                                        "id_number": v1(ID_NUMBER, "k1", shared.secret), "phone": stale_v2},
                          "materials": [], "delivery_method": "POST", "postal_address": None},
             "routed": {"matter_code": "KSTB-MKT-01"}, "elsewhere": [v1("x", "k1", shared.secret)]}
    ops.rotate("delivery", env)
    operator = PiiCipher(pii_policy.operator_keyring(env))
    counts = ops.Counts()
    after = ops.reseal_state(state, operator, REGISTRY, service="delivery", subject="TB1", counts=counts)
    assert (counts.resealed, counts.unplaced_v1, counts.failed) == (3, 1, 0)
    applicant = after["received"]["applicant"]
    delivery = PiiCipher(pii_policy.party_keyring("delivery", env))
    for field, value in (("name", NAME), ("id_number", ID_NUMBER), ("phone", PHONE)):
        assert not operator.stale(applicant[field])
        assert delivery.open(applicant[field], record=RECEIVED, path=f"applicant.{field}", subject="TB1") == value
        assert Sealed.parse(applicant[field]).parties == ["verification", "delivery"]
    assert after["routed"] == state["routed"]
    assert after["elsewhere"] == state["elsewhere"]
    again = ops.Counts()
    ops.reseal_state(after, operator, REGISTRY, service="delivery", subject="TB1", counts=again)
    assert (again.resealed, again.current) == (0, 3)
