"""Where the data-sharing providers listen, and their and the requesters' certificates.

Providers use the same mutual TLS as Tongban's services (tongban.grpc_tls): a server
certificate per provider, and a client certificate per requester whose common name is the
requester id the demand list names. Requesters get the role `monitor`, which grants nothing
in any Tongban API: what they may ask a provider is the demand list's to say.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from tongban.grpc_tls import listen_address, server_files
from tongban.ops import certs

# A provider's port unless TONGBAN_GRPC_PORT_<PROVIDER> says otherwise.
DEFAULT_PORTS = {"hn_psb": 50061, "mps": 50062, "samr": 50063, "moe": 50064, "mohrss": 50065}
PROVIDERS = tuple(DEFAULT_PORTS)  # every provider that shares evidence (the sharing catalogue's serving ones)
VERIFICATION = "tongban-verification"  # the requester verification queries as
TRACK = "tongban-intake"  # intake, reading an application's access list for Track (PIPL art. 35)
# Client certificates: the requesters the demand list names, and intake.
REQUESTERS = {VERIFICATION: "monitor", "hunan-notary": "monitor", "tongban-delivery": "monitor", TRACK: "monitor"}


def port_variable(provider: str) -> str:
    return f"TONGBAN_GRPC_PORT_{provider.upper()}"


def port(provider: str, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get(port_variable(provider)) or DEFAULT_PORTS[provider])


def target(provider: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    host = env.get("TONGBAN_GRPC_HOST") or "127.0.0.1"
    return listen_address("127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host, port(provider, env))


def ensure_certificates(directory: Path, providers: Sequence[str], hosts: Sequence[str] = ()) -> None:
    """The providers' server certificates and the requesters' client certificates, made if
    missing (idempotent, like `make setup`)."""
    certs.setup(directory, hosts, callers=REQUESTERS)
    with certs.locked(directory):
        ca, ca_key = certs.load_ca(directory)
        names = [*certs.SERVER_HOSTS, *(h for h in hosts if h and h not in ("0.0.0.0", "::", "[::]"))]
        for provider in providers:
            cert_path, key_path = server_files(directory, provider)
            if not (key_path.exists() and _issued_by(cert_path, ca)):
                certs.write_pair(cert_path, key_path, *certs.make_server(ca, ca_key, provider, names))


def _issued_by(cert_path: Path, ca: x509.Certificate) -> bool:
    """The certificate is there and signed by this CA (a renewed CA invalidates the old ones)."""
    try:
        x509.load_pem_x509_certificate(cert_path.read_bytes()).verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return True
