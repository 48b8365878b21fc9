"""Mutual TLS for Tongban's gRPC servers and clients, and who the caller is.

Every gRPC port requires a client certificate signed by Tongban's certificate authority
(the TLS handshake refuses anything else). A certificate names one caller:

- the subject's common name is the caller's id, its `source_system` (``hunan-portal``);
- one subject-alternative-name URI ``urn:tongban:role:<role>`` is its role;
- its extended key usage includes TLS client authentication.

Health needs no role (any certificate from the CA will do); each API method says which
roles may call it (`authorize`). `python -m tongban.ops.certs` makes the CA and issues
certificates; the files live under ``TONGBAN_GRPC_TLS_DIR`` (default ``var/tls/grpc``)::

    ca.pem                     the CA certificate every server and client trusts
    ca.key                     its private key (set-up and `issue` only; never on a service host)
    server/<service>.pem|key   a service's server certificate (127.0.0.1, ::1, localhost)
    clients/<caller>.pem|key   a caller's client certificate
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tongban import paths, telemetry

DEFAULT_TLS_DIR = paths.var_dir() / "tls" / "grpc"
ROLE_URI = "urn:tongban:role:"
# window, portal and partner systems receive applications; operators look after Tongban;
# a monitor only checks health (which needs no role: it is for probes that must hold none).
ROLES = ("window", "portal", "partner", "operator", "monitor")
CALLER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# What the tests, the demo and the benchmark submit as: the samples' source system.
DEFAULT_CALLER = "hunan-portal"

log = logging.getLogger(__name__)


class TlsFilesMissing(Exception):
    """A certificate or key is not where it should be; the message says how to make it."""


class NotACaller(ValueError):
    """A certificate from the CA that names no valid Tongban caller (no id, no or an unknown
    role, not for client authentication). The message says which, never more."""


@dataclass(frozen=True)
class Caller:
    source_system: str
    role: str


def tls_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("TONGBAN_GRPC_TLS_DIR") or DEFAULT_TLS_DIR)


def server_files(directory: Path, service: str) -> tuple[Path, Path]:
    return directory / "server" / f"{service}.pem", directory / "server" / f"{service}.key"


def client_files(directory: Path, caller: str) -> tuple[Path, Path]:
    return directory / "clients" / f"{caller}.pem", directory / "clients" / f"{caller}.key"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise TlsFilesMissing(f"no {what} at {path}: run `make setup` (or `python -m tongban.ops.certs setup`)"
                              ) from None


# ------------------------------------------------------------------------------ identity
def caller_from_certificate(cert: x509.Certificate) -> Caller:
    """The caller a client certificate names, or NotACaller. The chain and validity period
    were checked by the TLS handshake; this reads what the certificate says."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            raise NotACaller("a CA certificate is not a caller")
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise NotACaller("the certificate is not for client authentication") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise NotACaller("the certificate is not for client authentication")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not CALLER_ID.match(names[0].value):
        raise NotACaller("the certificate's common name is not a caller id ([a-z0-9][a-z0-9._-]*, at most 64)")
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    roles = [uri.removeprefix(ROLE_URI) for uri in uris if uri.startswith(ROLE_URI)]
    if len(roles) != 1:
        raise NotACaller(f"the certificate must name exactly one role ({ROLE_URI}<role>), it names {len(roles)}")
    if roles[0] not in ROLES:
        raise NotACaller(f"unknown role; roles are {', '.join(ROLES)}")
    return Caller(names[0].value, roles[0])


@functools.lru_cache(maxsize=512)
def caller_from_pem(pem: bytes) -> Caller:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise NotACaller("unreadable client certificate") from None
    return caller_from_certificate(cert)


def caller_of(context: grpc.aio.ServicerContext) -> Caller:
    """The caller of this call, from the client certificate the TLS handshake verified."""
    pems = (context.auth_context() or {}).get("x509_pem_cert") or []
    if not pems:
        raise NotACaller("no client certificate")
    return caller_from_pem(bytes(pems[0]))


async def authorize(context: grpc.aio.ServicerContext, method: str, roles: tuple[str, ...]) -> Caller:
    """The caller, if its role may call `method`; otherwise the call ends UNAUTHENTICATED
    (no valid caller identity) or PERMISSION_DENIED (a role that may not call it). The
    messages name the method, the caller id and role, never request data."""
    try:
        caller = caller_of(context)
    except NotACaller as exc:
        telemetry.log(log, logging.WARNING, "grpc call refused", method=method, reason=str(exc))
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{method}: {exc}")
        raise  # unreachable: abort raises
    if caller.role not in roles:
        telemetry.log(log, logging.WARNING, "grpc call refused", method=method, caller=caller.source_system,
                      role=caller.role)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"{method}: role {caller.role} may not call it (allowed: {', '.join(roles)})")
    return caller


async def deny(context: grpc.aio.ServicerContext, method: str, caller: Caller, why: str) -> None:
    """End the call PERMISSION_DENIED for a rule beyond roles (whose application it is)."""
    telemetry.log(log, logging.WARNING, "grpc call refused", method=method, caller=caller.source_system,
                  role=caller.role, reason=why)
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method}: {why}")


# ------------------------------------------------------------------------------ credentials
def server_credentials(directory: Path, service: str) -> grpc.ServerCredentials:
    """TLS with this service's certificate; a client certificate from the CA is required."""
    cert, key = server_files(directory, service)
    return grpc.ssl_server_credentials(
        [(_read(key, f"{service} server key"), _read(cert, f"{service} server certificate"))],
        root_certificates=_read(directory / "ca.pem", "gRPC CA certificate"), require_client_auth=True)


def channel_credentials(caller: str = DEFAULT_CALLER, directory: Path | None = None) -> grpc.ChannelCredentials:
    """TLS trusting Tongban's CA, presenting `caller`'s client certificate."""
    directory = directory or tls_dir()
    cert, key = client_files(directory, caller)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(directory / "ca.pem", "gRPC CA certificate"),
        private_key=_read(key, f"client key of {caller}"),
        certificate_chain=_read(cert, f"client certificate of {caller}"))


def client_channel(target: str, caller: str = DEFAULT_CALLER, directory: Path | None = None,
                   options: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
    """An asyncio channel to a Tongban service at `target` (host:port), as `caller`.
    Use it like `grpc.aio.insecure_channel` (`async with client_channel(t, "hunan-portal")`)."""
    return grpc.aio.secure_channel(target, channel_credentials(caller, directory), options=options)


# gRPC lets a second server bind a port already served (SO_REUSEPORT) and then splits the
# connections between the two: a client of one service would reach another and get
# UNIMPLEMENTED. A port taken is a mistake in the deployment; a server refuses to start on it.
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
