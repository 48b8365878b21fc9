"""gRPC callers: what a client certificate must say to name a caller, the local CA's set-up
and issuing, the listen address, and who may see an application. No broker, no server."""

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.intake import domain, handlers
from tongban.config import ConfigError, load_settings
from tongban.events import now_utc
from tongban.grpc_tls import (
    ROLE_URI,
    Caller,
    NotACaller,
    caller_from_certificate,
    caller_from_pem,
    client_files,
    listen_address,
    server_files,
)
from tongban.handling import Event
from tongban.ops import certs


@pytest.fixture(scope="module")
def ca():
    return certs.make_ca()


def with_names(ca, common_names: list[str], uris: list[str], usage=ExtendedKeyUsageOID.CLIENT_AUTH) -> x509.Certificate:
    cert, ca_key = ca
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n) for n in common_names])
    return certs._leaf(cert, ca_key, subject, [x509.UniformResourceIdentifier(u) for u in uris], usage, 30)[0]


# ------------------------------------------------------------------------------ identity
@pytest.mark.parametrize("role", ["window", "portal", "partner", "operator", "monitor"])
def test_a_client_certificate_names_its_caller_by_common_name_and_its_role_by_uri(ca, role):
    cert, _ = certs.make_client(*ca, "changsha-window", role)
    assert caller_from_certificate(cert) == Caller("changsha-window", role)
    pem = certs._cert_pem(cert)
    assert caller_from_pem(pem) == Caller("changsha-window", role)


def test_a_server_certificate_is_not_a_caller(ca):
    cert, _ = certs.make_server(*ca, "intake")
    with pytest.raises(NotACaller, match="not for client authentication"):
        caller_from_certificate(cert)


def test_the_ca_certificate_is_not_a_caller(ca):
    with pytest.raises(NotACaller, match="CA certificate"):
        caller_from_certificate(ca[0])


@pytest.mark.parametrize(("uris", "problem"), [
    ([], "exactly one role"),
    ([ROLE_URI + "window", ROLE_URI + "operator"], "exactly one role"),
    ([ROLE_URI + "admin"], "unknown role"),
    (["urn:other:role:window"], "exactly one role"),
])
def test_a_certificate_without_exactly_one_known_role_is_not_a_caller(ca, uris, problem):
    with pytest.raises(NotACaller, match=problem):
        caller_from_certificate(with_names(ca, ["changsha-window"], uris))


@pytest.mark.parametrize("names", [[], ["Changsha-Window"], ["-window"], ["长沙窗口"], ["two words"], ["a", "b"]])
def test_a_certificate_whose_common_name_is_not_one_caller_id_is_not_a_caller(ca, names):
    with pytest.raises(NotACaller, match="common name"):
        caller_from_certificate(with_names(ca, names, [ROLE_URI + "window"]))


def test_a_client_certificate_for_server_use_only_is_not_a_caller(ca):
    cert = with_names(ca, ["changsha-window"], [ROLE_URI + "window"], usage=ExtendedKeyUsageOID.SERVER_AUTH)
    with pytest.raises(NotACaller, match="client authentication"):
        caller_from_certificate(cert)


def test_unreadable_pem_is_not_a_caller():
    with pytest.raises(NotACaller, match="unreadable"):
        caller_from_pem(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize(("caller", "role", "problem"), [
    ("Bad Id", "window", "a caller id is"),
    ("changsha-window", "admin", "role must be one of"),
])
def test_issuing_refuses_a_bad_caller_id_or_role(ca, caller, role, problem):
    with pytest.raises(ValueError, match=problem):
        certs.make_client(*ca, caller, role)


# ------------------------------------------------------------------------------ set-up and issuing
def test_setup_makes_the_ca_server_and_caller_certificates_with_private_keys_for_the_owner_only(tmp_path):
    written = certs.setup(tmp_path, callers={"changsha-window": "window"})
    assert {"ca.pem", "server/intake.pem", "server/feedback.pem", "clients/changsha-window.pem"} <= set(written)
    keys = [tmp_path / "ca.key", *(p for p in tmp_path.rglob("*.key"))]
    assert keys
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate(server_files(tmp_path, "intake")[0].read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "127.0.0.1", "::1"} == {str(n.value) for n in names}
    client = x509.load_pem_x509_certificate(client_files(tmp_path, "changsha-window")[0].read_bytes())
    assert caller_from_certificate(client) == Caller("changsha-window", "window")


def test_setup_twice_changes_nothing_the_second_time(tmp_path):
    certs.setup(tmp_path, callers={"changsha-window": "window"})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.pem")}
    assert certs.setup(tmp_path, callers={"changsha-window": "window"}) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.pem")} == before


def test_setup_renews_a_caller_certificate_about_to_expire_and_keeps_the_ca(tmp_path):
    certs.setup(tmp_path, callers={"changsha-window": "window"})
    ca_before = (tmp_path / "ca.pem").read_bytes()
    cert_path, key_path = client_files(tmp_path, "changsha-window")
    ca, ca_key = certs.load_ca(tmp_path)
    certs.write_pair(cert_path, key_path, *certs.make_client(ca, ca_key, "changsha-window", "window", days=10))
    assert certs.setup(tmp_path, callers={"changsha-window": "window"}) == ["clients/changsha-window.pem"]
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    renewed = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert renewed.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)


def test_setup_adds_a_listen_host_to_the_server_certificates(tmp_path):
    certs.setup(tmp_path, callers={})
    certs.setup(tmp_path, hosts=["10.1.2.3", "intake.example.gov.cn", "0.0.0.0"], callers={})
    server = x509.load_pem_x509_certificate(server_files(tmp_path, "routing")[0].read_bytes())
    names = {str(n.value) for n in server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}
    assert names == {"localhost", "127.0.0.1", "::1", "10.1.2.3", "intake.example.gov.cn"}


def test_issue_makes_a_new_callers_certificate_and_renews_one_only_when_forced(tmp_path):
    certs.setup(tmp_path, callers={})
    cert_path, key_path = certs.issue("hubei-window", "window", tmp_path)
    assert caller_from_pem(cert_path.read_bytes()) == Caller("hubei-window", "window")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    with pytest.raises(SystemExit, match="exists"):
        certs.issue("hubei-window", "portal", tmp_path)
    certs.issue("hubei-window", "partner", tmp_path, force=True)
    assert caller_from_pem(cert_path.read_bytes()) == Caller("hubei-window", "partner")


def test_issue_without_a_ca_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(SystemExit, match="make setup"):
        certs.issue("hubei-window", "window", tmp_path)


# ------------------------------------------------------------------------------ listen address
def test_the_grpc_server_listens_on_loopback_unless_told_otherwise():
    # routing: a service that holds no personal-data key, so nothing else needs configuring
    assert load_settings("routing", {}).grpc_host == "127.0.0.1"
    assert load_settings("routing", {"TONGBAN_GRPC_HOST": "0.0.0.0"}).grpc_host == "0.0.0.0"
    assert load_settings("routing", {"TONGBAN_GRPC_HOST": "::"}).grpc_host == "::"
    assert load_settings("routing", {"TONGBAN_GRPC_TLS_DIR": "/etc/tongban/tls"}).grpc_tls_dir == Path(
        "/etc/tongban/tls")


@pytest.mark.parametrize("host", ["127.0.0.1:50051", "http://host", "two hosts"])
def test_a_grpc_host_with_a_port_or_a_scheme_is_refused(host):
    with pytest.raises(ConfigError, match="TONGBAN_GRPC_HOST"):
        load_settings("routing", {"TONGBAN_GRPC_HOST": host})


def test_listen_addresses_bracket_ipv6():
    assert listen_address("127.0.0.1", 50051) == "127.0.0.1:50051"
    assert listen_address("::", 50051) == "[::]:50051"
    assert listen_address("[::1]", 50051) == "[::1]:50051"


# ------------------------------------------------------------------------------ who sees an application
RECEIVED_BY_WINDOW = domain.new_progress("TB1", "KSTB-MED-01", now_utc(), "changsha-window", "window")
RECEIVED_BY_PORTAL = domain.new_progress("TB2", "KSTB-MED-01", now_utc(), "hunan-portal", "portal")
RECEIVED_UNKNOWN = domain.new_progress("TB3", "KSTB-MED-01", now_utc())


@pytest.mark.parametrize(("progress", "caller", "role", "sees"), [
    (RECEIVED_BY_WINDOW, "changsha-window", "window", True),
    (RECEIVED_BY_WINDOW, "xiangxi-window", "window", False),
    (RECEIVED_BY_WINDOW, "hunan-portal", "portal", False),
    (RECEIVED_BY_WINDOW, "partner-420000", "partner", False),
    (RECEIVED_BY_WINDOW, "tongban-operator", "operator", True),
    (RECEIVED_BY_WINDOW, "tongban-monitor", "monitor", False),
    (RECEIVED_BY_PORTAL, "hunan-portal", "portal", True),
    (RECEIVED_BY_PORTAL, "gov-portal", "portal", True),
    (RECEIVED_BY_PORTAL, "changsha-window", "window", False),
    (RECEIVED_BY_PORTAL, "partner-420000", "partner", False),
    (RECEIVED_UNKNOWN, "", "window", False),
    (RECEIVED_UNKNOWN, "hunan-portal", "portal", False),
    (RECEIVED_UNKNOWN, "tongban-operator", "operator", True),
])
def test_an_application_is_seen_by_its_receiver_portals_for_portal_ones_and_operators(progress, caller, role, sees):
    assert domain.may_see(progress, caller, role) is sees


async def test_the_progress_view_records_the_receiver_and_the_received_event_does_not_carry_it():
    body = {"application_id": "TB1", "matter_code": "KSTB-MED-01", "receiving_division": "430102",
            "home_division": "430102", "submitted_at": now_utc(),
            "received_by": {"source_system": "changsha-window", "role": "window"}, "fingerprints": {}, "materials": []}
    event = Event("submit:TB1", handlers.SUBMIT, "TB1", body, {"occurred_at": now_utc()}, "command")
    outcome = await handlers.submit(event, None)
    assert (outcome.state["source_system"], outcome.state["source_role"]) == ("changsha-window", "window")
    # The received event is published by the numbering command, from the same body.
    numbering = Event("number:TB1", handlers.NUMBER, domain.numbering_key("TB1"), body, {"occurred_at": now_utc()},
                      "command")
    assert "received_by" not in (await handlers.number(numbering, None)).emits[0].payload
    assert "received_by" in body, "the command itself is left as it was"
