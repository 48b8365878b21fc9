"""The local certificate authority of Tongban's gRPC APIs, and the certificates it issues.

    python -m tongban.ops.certs setup [--host HOST ...]       CA, a server certificate per
                                                              service, the local callers
    python -m tongban.ops.certs issue CALLER --role ROLE [--days N] [--force]
    python -m tongban.ops.certs show PATH                     the caller a certificate names

`setup` (run by `make setup`) is idempotent: it keeps what exists and is valid for at least
another 30 days, renews server and local caller certificates that are not (or whose server
names changed), and never replaces a CA that is still valid. Private keys are written mode
600, the folder mode 700 (``TONGBAN_GRPC_TLS_DIR``, default ``var/tls/grpc``, git-ignored).

`issue` makes a client certificate for a new caller, or renews one (``--force``): CN = the
caller's id (its ``source_system``), SAN URI ``urn:tongban:role:<role>``, client-auth only.
Hand the caller its ``clients/<id>.pem``, ``clients/<id>.key`` and ``ca.pem``.

Keys are ECDSA P-256; certificates are X.509 v3 signed with SHA-256 (``cryptography``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tongban.config import SERVICE_PORTS
from tongban.grpc_tls import (
    CALLER_ID,
    ROLE_URI,
    ROLES,
    NotACaller,
    caller_from_certificate,
    client_files,
    server_files,
    tls_dir,
)

CA_DAYS = 3650
LEAF_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=30)
SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
# The callers a local set-up issues: the demo, the tests and the benchmark use them.
LOCAL_CALLERS = {
    "hunan-portal": "portal",      # 湖南政务服务网: the samples' source system
    "gov-portal": "portal",        # 国家政务服务平台: another portal of the integrated platform
    "changsha-window": "window",   # a Changsha service-hall window system
    "xiangxi-window": "window",    # a 湘西 service-hall window system
    "partner-420000": "partner",   # Hubei's system, receiving for Hunan
    "tongban-operator": "operator",
    "tongban-monitor": "monitor",  # health checks (the launcher)
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name: str = "Tongban local gRPC CA", days: int = CA_DAYS
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tongban"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, subject: x509.Name,
          names: list[x509.GeneralName], usage: x509.ObjectIdentifier, days: int,
          not_before: dt.datetime | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def make_server(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, service: str,
                hosts: Sequence[str] = SERVER_HOSTS, days: int = LEAF_DAYS
                ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tongban"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"tongban-{service}")])
    names = [_host_name(h) for h in dict.fromkeys(hosts)]
    return _leaf(ca, ca_key, subject, names, ExtendedKeyUsageOID.SERVER_AUTH, days)


def make_client(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, caller: str, role: str,
                days: int = LEAF_DAYS, not_before: dt.datetime | None = None, check: bool = True
                ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate naming `caller` (CN) and `role` (SAN URI). `check=False` lets
    tests make certificates Tongban must refuse."""
    if check and not CALLER_ID.match(caller):
        raise ValueError("a caller id is [a-z0-9][a-z0-9._-]*, at most 64 characters")
    if check and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tongban"),
                         x509.NameAttribute(NameOID.COMMON_NAME, caller)])
    return _leaf(ca, ca_key, subject, [x509.UniformResourceIdentifier(ROLE_URI + role)],
                 ExtendedKeyUsageOID.CLIENT_AUTH, days, not_before)


# ------------------------------------------------------------------------------ files
def _write(path: Path, data: bytes, secret: bool = False) -> None:
    """Atomically, a private key readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    _write(key_path, _key_pem(key), secret=True)
    _write(cert_path, _cert_pem(cert))


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = _load_cert(directory / "ca.pem")
    try:
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except (OSError, ValueError):
        key = None
    if cert is None or not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"no gRPC CA in {directory}: run `python -m tongban.ops.certs setup` (make setup)")
    return cert, key


def _fresh(cert: x509.Certificate | None, ca: x509.Certificate) -> bool:
    """Signed by this CA and valid for at least RENEW_BEFORE."""
    if cert is None or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in names}


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One writer at a time (two set-ups at once must not make two CAs)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def setup(directory: Path | None = None, hosts: Sequence[str] = (), callers: dict[str, str] | None = None
          ) -> list[str]:
    """Make what is missing or about to expire; returns what was written."""
    directory = directory or tls_dir()
    hosts = [*SERVER_HOSTS, *(h for h in hosts if h and h not in ("0.0.0.0", "::", "[::]"))]
    done: list[str] = []
    with locked(directory):
        ca = _load_cert(directory / "ca.pem")
        if ca is None or not (directory / "ca.key").exists() or ca.not_valid_after_utc - _now() <= RENEW_BEFORE:
            ca, ca_key = make_ca()
            write_pair(directory / "ca.pem", directory / "ca.key", ca, ca_key)
            done.append("ca.pem")
        ca, ca_key = load_ca(directory)
        for service in SERVICE_PORTS:
            cert_path, key_path = server_files(directory, service)
            current = _load_cert(cert_path)
            if not (_fresh(current, ca) and key_path.exists() and current is not None
                    and _sans(current) >= {str(_host_name(h).value) for h in hosts}):
                write_pair(cert_path, key_path, *make_server(ca, ca_key, service, hosts))
                done.append(str(cert_path.relative_to(directory)))
        for caller, role in (LOCAL_CALLERS if callers is None else callers).items():
            cert_path, key_path = client_files(directory, caller)
            if not (_fresh(current := _load_cert(cert_path), ca) and key_path.exists()
                    and _names(current) == (caller, role)):
                write_pair(cert_path, key_path, *make_client(ca, ca_key, caller, role))
                done.append(str(cert_path.relative_to(directory)))
    return done


def _names(cert: x509.Certificate | None) -> tuple[str, str] | None:
    if cert is None:
        return None
    try:
        caller = caller_from_certificate(cert)
    except NotACaller:
        return None
    return caller.source_system, caller.role


def issue(caller: str, role: str, directory: Path | None = None, days: int = LEAF_DAYS,
          force: bool = False) -> tuple[Path, Path]:
    """A client certificate for `caller` with `role`, signed by the CA in `directory`."""
    directory = directory or tls_dir()
    cert_path, key_path = client_files(directory, caller)
    with locked(directory):
        if cert_path.exists() and not force:
            raise SystemExit(f"{cert_path} exists; --force renews it (a new key and certificate)")
        ca, ca_key = load_ca(directory)
        write_pair(cert_path, key_path, *make_client(ca, ca_key, caller, role, days))
    return cert_path, key_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    setup_cmd = commands.add_parser("setup", help="CA, server certificates, local callers (idempotent)")
    setup_cmd.add_argument("--host", action="append", default=[],
                           help="another name or address for the server certificates (repeatable); "
                                "TONGBAN_GRPC_HOST is added when set")
    issue_cmd = commands.add_parser("issue", help="a client certificate for a caller")
    issue_cmd.add_argument("caller", help="the caller's id, its source_system (e.g. hubei-window)")
    issue_cmd.add_argument("--role", required=True, choices=ROLES)
    issue_cmd.add_argument("--days", type=int, default=LEAF_DAYS)
    issue_cmd.add_argument("--force", action="store_true", help="renew an existing caller's certificate")
    show_cmd = commands.add_parser("show", help="the caller a certificate names, and its validity")
    show_cmd.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    directory = tls_dir()
    if args.command == "setup":
        written = setup(directory, [*args.host, os.environ.get("TONGBAN_GRPC_HOST", "")])
        print(f"{directory}: " + (f"wrote {', '.join(written)}" if written else "up to date"))
    elif args.command == "issue":
        try:
            cert_path, key_path = issue(args.caller, args.role, directory, args.days, args.force)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"issued {args.caller} ({args.role}): {cert_path}, {key_path} (with {directory / 'ca.pem'})")
    else:
        cert = _load_cert(args.path)
        if cert is None:
            raise SystemExit(f"{args.path}: not a PEM certificate")
        try:
            who = caller_from_certificate(cert)
            what = f"caller {who.source_system}, role {who.role}"
        except NotACaller as exc:
            what = f"not a caller: {exc}"
        print(f"{args.path}: {what}; subject {cert.subject.rfc4514_string()}; "
              f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
