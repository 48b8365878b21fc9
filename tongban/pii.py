"""Field-level encryption of personal data, driven by the schemas' `"pii": true` marks.

Every party that reads personal data has its own keys: each partner authority, the carrier
`ems`, the 12345 hotline, and the Tongban services that must read it (intake, verification,
delivery). A value is sealed for a set of *recipients* (parties): a fresh data key encrypts
the value and is wrapped once per recipient with that party's current key, so exactly those
parties can open it. Which parties a topic's personal data is sealed for is decided in
`tongban.pii_policy`; this module is the mechanism.

A sealed value is bound to its place: the associated data of both AEAD operations covers the
suite, the record's full name, the field path, the subject (the envelope's correlation id:
the application id) and every recipient's party and key id. A value copied into another
field or another application therefore fails to open.

Wire format, version 2 (text, so it fits the schemas' string fields)::

    pii:v2:<suite>:<record>:<path>:<subject>:<party>.<key id>.<wrap>[,...]:<body>

`path` and `subject` are percent-encoded; `wrap` is base64url(nonce + AEAD(party key, data
key)) and `body` base64url(nonce + AEAD(data key, value)), without padding. Everything before
`<body>` (less the wraps) is the associated data; each wrap adds its own `<party>.<key id>`.

Version 1 (`pii:v1:<key id>:<base64 of nonce + ciphertext>`, one key shared by everyone, the
key id as the only associated data) still opens wherever a key with that id is configured, so
records written before the migration stay readable until re-sealed (`python -m
tongban.ops.pii reseal`) or aged out of their topics; nothing seals v1 any more.

Suites: `aes-256-gcm` (the default, 32-byte keys) and `sm4-gcm` (GB/T 32907 SM4 in GCM mode,
RFC 8998; 16-byte keys) where 商用密码 rules apply, both from the `cryptography` package
(OpenSSL); no cipher is written here.

Keyed hashes follow the suite (`keyed_digest`): HMAC-SHA256 under `aes-256-gcm`, HMAC-SM3
(GB/T 32905) under `sm4-gcm`. Delivery's dispatch ids and the 12345 platform's caller hashes
use it; under the default suite it gives exactly the HMAC-SHA256 values made before. A switch
to `sm4-gcm` changes only ids made after it: a delivery file keeps the dispatch ids it was
given, and receipts are matched against those.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from tongban.codec import SchemaRegistry

SEALED = "pii:v"  # what every sealed value starts with, whatever its version
PREFIX = "pii:v1:"  # the legacy format, still opened
V2 = "pii:v2:"
NONCE = 12
TAG = 16
DEFAULT_SUITE = "aes-256-gcm"


class PiiError(ValueError):
    """A value that cannot be sealed or opened here; the message never holds the value."""


# ------------------------------------------------------------------------------ suites
@dataclass(frozen=True)
class Suite:
    name: str  # as configured (TONGBAN_PII_CIPHER)
    tag: str  # as written in a sealed value
    key_size: int
    encrypt: Callable[[bytes, bytes, bytes, bytes], bytes] = field(repr=False)  # key, nonce, data, ad
    decrypt: Callable[[bytes, bytes, bytes, bytes], bytes] = field(repr=False)
    hash: Callable[[], hashes.HashAlgorithm] = field(repr=False)  # the keyed hash's digest


def _aes_encrypt(key: bytes, nonce: bytes, data: bytes, ad: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce, data, ad)


def _aes_decrypt(key: bytes, nonce: bytes, data: bytes, ad: bytes) -> bytes:
    return AESGCM(key).decrypt(nonce, data, ad)


def _sm4_encrypt(key: bytes, nonce: bytes, data: bytes, ad: bytes) -> bytes:
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(ad)
    out = encryptor.update(data) + encryptor.finalize()
    return out + encryptor.tag


def _sm4_decrypt(key: bytes, nonce: bytes, data: bytes, ad: bytes) -> bytes:
    if len(data) < TAG:
        raise InvalidTag()
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, data[-TAG:])).decryptor()
    decryptor.authenticate_additional_data(ad)
    return decryptor.update(data[:-TAG]) + decryptor.finalize()


SUITES = {
    "aes-256-gcm": Suite("aes-256-gcm", "aes256gcm", 32, _aes_encrypt, _aes_decrypt, hashes.SHA256),
    "sm4-gcm": Suite("sm4-gcm", "sm4gcm", 16, _sm4_encrypt, _sm4_decrypt, hashes.SM3),
}
_BY_TAG = {s.tag: s for s in SUITES.values()}


def keyed_digest(key: bytes, data: bytes, suite: str = DEFAULT_SUITE) -> bytes:
    """HMAC of `data` under `key` with the suite's hash: SHA-256 for `aes-256-gcm`, SM3 for
    `sm4-gcm`, so a deployment under 商用密码 rules uses no non-SM primitive for keyed hashes."""
    mac = hmac.HMAC(key, SUITES[suite].hash())
    mac.update(data)
    return mac.finalize()


def suite_available(name: str) -> bool:
    """Whether this build of `cryptography`/OpenSSL offers the suite (SM4-GCM may be missing)."""
    suite = SUITES.get(name)
    if suite is None:
        return False
    try:
        key = bytes(suite.key_size)
        keyed_digest(key, b"x", name)  # its keyed hash (SM3) must be there too
        return suite.decrypt(key, bytes(NONCE), suite.encrypt(key, bytes(NONCE), b"x", b""), b"") == b"x"
    except Exception:  # UnsupportedAlgorithm and friends: the build lacks it
        return False


# ------------------------------------------------------------------------------ keys
@dataclass(frozen=True)
class Key:
    key_id: str
    suite: str
    secret: bytes = field(repr=False)


def _valid_id(text: str) -> bool:
    return bool(text) and text.isascii() and text.replace("-", "").replace("_", "").isalnum()


def parse_keys(text: str) -> dict[str, Key]:
    """`id=base64` (AES-256-GCM, 32 bytes) or `id=sm4:base64` (SM4-GCM, 16 bytes) entries
    separated by commas or new lines, `#` comments; order kept: the first key of the
    configured suite seals, all open."""
    keys: dict[str, Key] = {}
    entries = [e for line in text.splitlines() if not line.strip().startswith("#") for e in line.split(",")]
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        key_id, _, encoded = (part.strip() for part in entry.partition("="))
        suite = DEFAULT_SUITE
        if ":" in encoded:
            prefix, _, encoded = encoded.partition(":")
            suite = {"sm4": "sm4-gcm", "aes256": "aes-256-gcm"}.get(prefix.strip(), "")
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            secret = b""
        if not suite or not key_id.isalnum() or not key_id.isascii() or len(secret) != SUITES[suite].key_size:
            raise ValueError("each key must be <alphanumeric id>=<base64 of 32 bytes> (AES-256-GCM) "
                             "or <id>=sm4:<base64 of 16 bytes> (SM4-GCM)")
        if key_id in keys:
            raise ValueError(f"key id {key_id} appears twice")
        keys[key_id] = Key(key_id, suite, secret)
    if not keys:
        raise ValueError("no key given")
    return keys


def key_line(key: Key) -> str:
    encoded = base64.b64encode(key.secret).decode()
    return f"{key.key_id}={'sm4:' if key.suite == 'sm4-gcm' else ''}{encoded}"


def new_key(key_id: str | None = None, suite: str = DEFAULT_SUITE) -> Key:
    """A fresh random key; its default id says when it was made (`kYYYYMMDD` + 4 hex)."""
    key_id = key_id or f"k{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}"
    return Key(key_id, suite, os.urandom(SUITES[suite].key_size))


def new_key_line(key_id: str = "k1", suite: str = DEFAULT_SUITE) -> str:
    return key_line(new_key(key_id, suite))


# ------------------------------------------------------------------------------ keyrings
@dataclass(frozen=True)
class Keyring:
    """The keys one process holds.

    - `party`: whose keys `opening[party]` are; None for a process that holds no key
      (routing, feedback): it can neither seal nor open.
    - `opening`: party -> every key of that party, for opening (old keys open until retired).
      A service or partner opens only as itself; the operator's re-seal tool holds all.
    - `sealing`: party -> that party's current key, for each party this process seals for.
      With symmetric keys a writer holds the current key of every party it seals for
      (intake: verification's and delivery's; delivery: each partner's): it had the plaintext
      anyway. A partner holds only its own.
    - `suite`: the suite that seals (TONGBAN_PII_CIPHER)."""

    party: str | None = None
    opening: Mapping[str, Mapping[str, Key]] = field(default_factory=dict)
    sealing: Mapping[str, Key] = field(default_factory=dict)
    suite: str = DEFAULT_SUITE

    @classmethod
    def of(cls, party: str, keys: Mapping[str, Key], suite: str = DEFAULT_SUITE,
           seals_for: Mapping[str, Mapping[str, Key]] | None = None) -> Keyring:
        """A party's keyring: opens with `keys`, seals for itself and for `seals_for`."""
        sealing = {p: current_key(k, suite, p) for p, k in {**(seals_for or {}), party: keys}.items()}
        return cls(party, {party: dict(keys)}, sealing, suite)


def current_key(keys: Mapping[str, Key], suite: str, party: str = "") -> Key:
    """The first key of `suite`: the one that seals."""
    for key in keys.values():
        if key.suite == suite:
            return key
    raise PiiError(f"party {party or '?'} has no {suite} key to seal with")


# ------------------------------------------------------------------------------ the format
def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Sealed:
    """A parsed version-2 value."""

    suite: Suite
    record: str
    path: str
    subject: str
    recipients: tuple[tuple[str, str, bytes], ...]  # (party, key id, wrapped data key)
    body: bytes

    @property
    def parties(self) -> list[str]:
        return [party for party, _, _ in self.recipients]

    def associated_data(self) -> bytes:
        holders = ",".join(f"{party}.{key_id}" for party, key_id, _ in self.recipients)
        return ":".join((V2.rstrip(":"), self.suite.tag, self.record, quote(self.path, safe=""),
                         quote(self.subject, safe=""), holders)).encode()

    def text(self) -> str:
        wraps = ",".join(f"{party}.{key_id}.{_b64e(wrap)}" for party, key_id, wrap in self.recipients)
        return (f"{V2}{self.suite.tag}:{self.record}:{quote(self.path, safe='')}:{quote(self.subject, safe='')}:"
                f"{wraps}:{_b64e(self.body)}")

    @classmethod
    def parse(cls, value: str) -> Sealed:
        parts = value[len(V2):].split(":")
        if len(parts) != 6:
            raise PiiError("a sealed personal field is malformed")
        tag, record, path, subject, wraps, body = parts
        suite = _BY_TAG.get(tag)
        if suite is None:
            raise PiiError(f"a sealed personal field uses an unknown suite {tag[:20]!r}")
        try:
            recipients = []
            for item in wraps.split(","):
                party, key_id, wrap = item.split(".")
                recipients.append((party, key_id, _b64d(wrap)))
            return cls(suite, record, unquote(path), unquote(subject), tuple(recipients), _b64d(body))
        except ValueError:
            raise PiiError("a sealed personal field is malformed") from None


def is_sealed(value: Any) -> bool:
    """Whether a value looks sealed (any version); such input is never taken as plaintext."""
    return isinstance(value, str) and value.startswith(SEALED)


def looks_sealed(value: Any) -> bool:
    """The edge's looser test: a sealed-looking prefix however it is spaced or cased."""
    return isinstance(value, str) and value.strip().lower().startswith(SEALED)


def sealed_for(value: str) -> list[str]:
    """The parties a version-2 value is sealed for (empty for v1 or plaintext)."""
    if not isinstance(value, str) or not value.startswith(V2):
        return []
    return Sealed.parse(value).parties


class PiiCipher:
    """Seals and opens personal fields with one process's keyring."""

    def __init__(self, keyring: Keyring | None = None) -> None:
        self.keyring = keyring or Keyring()
        self.suite = SUITES[self.keyring.suite]

    @property
    def party(self) -> str | None:
        return self.keyring.party

    def can_seal_for(self, parties: Iterable[str]) -> bool:
        return all(p in self.keyring.sealing for p in parties)

    # -------------------------------------------------------------- sealing
    def seal(self, value: str, *, record: str, path: str, subject: str, recipients: Sequence[str]) -> str:
        """`value` sealed for `recipients` and bound to (record, path, subject)."""
        if not isinstance(value, str):
            raise PiiError(f"personal field {path} of {record} must be a string to be sealed")
        if is_sealed(value):
            raise PiiError(f"personal field {path} of {record} already holds a sealed value; "
                           "open it where it was sealed before passing it on")
        parties = list(dict.fromkeys(recipients))
        if not parties:
            raise PiiError(f"no recipients for personal field {path} of {record}")
        keys: dict[str, Key] = {}
        for party in parties:
            key = self.keyring.sealing.get(party)
            if key is None:
                who = f"tongban party {self.party}" if self.party else "this process"
                raise PiiError(f"{who} holds no key to seal for party {party}")
            if key.suite != self.suite.name:
                raise PiiError(f"party {party}'s current key is not a {self.suite.name} key")
            keys[party] = key
        data_key = os.urandom(self.suite.key_size)
        header = Sealed(self.suite, record, path, subject, tuple((p, k.key_id, b"") for p, k in keys.items()), b"")
        ad = header.associated_data()
        wraps = []
        for party, key in keys.items():
            nonce = os.urandom(NONCE)
            wrapped = self.suite.encrypt(key.secret, nonce, data_key, ad + f"|{party}.{key.key_id}".encode())
            wraps.append((party, key.key_id, nonce + wrapped))
        nonce = os.urandom(NONCE)
        body = nonce + self.suite.encrypt(data_key, nonce, value.encode(), ad)
        return Sealed(self.suite, record, path, subject, tuple(wraps), body).text()

    # -------------------------------------------------------------- opening
    def open(self, value: str, *, record: str, path: str, subject: str) -> str:
        """The plaintext of a value found at (record, path) of `subject`'s event. Anything
        else fails: plaintext where a sealed value belongs, a value sealed for another place
        (moved), for other parties, with a retired key, or tampered."""
        if not is_sealed(value):
            raise PiiError(f"personal field {path} of {record} is not sealed")
        if value.startswith(PREFIX):
            return self._open_v1(value, path, record)
        if not value.startswith(V2):
            raise PiiError(f"personal field {path} of {record} uses an unknown sealed format")
        sealed = Sealed.parse(value)
        if (sealed.record, sealed.path, sealed.subject) != (record, path, subject):
            raise PiiError(f"personal field {path} of {record} holds a value sealed for another field or "
                           "application")
        return self._open_v2(sealed, self.keyring.opening.keys() if self.party is None else [self.party])

    def open_anywhere(self, value: str) -> str:
        """The plaintext of a v2 value, opened where its header says it was sealed, with any
        party's key this keyring holds: for the operator's re-seal tool only."""
        sealed = Sealed.parse(value)
        return self._open_v2(sealed, self.keyring.opening.keys())

    def _open_v2(self, sealed: Sealed, as_parties: Iterable[str]) -> str:
        ad = sealed.associated_data()
        allowed = set(as_parties)
        holders = [r for r in sealed.recipients if r[0] in allowed]
        if not holders:
            raise PiiError(f"personal field {sealed.path} of {sealed.record} is sealed for "
                           f"{', '.join(sealed.parties)}, not for {self.party or 'this process'}")
        for party, key_id, wrap in holders:
            key = self.keyring.opening.get(party, {}).get(key_id)
            if key is None:
                continue
            if key.suite != sealed.suite.name:
                raise PiiError(f"key {key_id} of party {party} is not a {sealed.suite.name} key")
            try:
                data_key = sealed.suite.decrypt(key.secret, wrap[:NONCE], wrap[NONCE:],
                                                ad + f"|{party}.{key_id}".encode())
                return sealed.suite.decrypt(data_key, sealed.body[:NONCE], sealed.body[NONCE:], ad).decode()
            except (InvalidTag, ValueError):
                raise PiiError(f"personal field {sealed.path} of {sealed.record} failed to open "
                               "(tampered, moved or a wrong key)") from None
        raise PiiError(f"no key {', '.join(k for _, k, _ in holders)} of party "
                       f"{', '.join(p for p, _, _ in holders)} to open personal field {sealed.path}")

    def _open_v1(self, value: str, path: str, record: str) -> str:
        key_id, _, encoded = value[len(PREFIX):].partition(":")
        key = next((keys[key_id] for keys in self.keyring.opening.values() if key_id in keys), None)
        if key is None or key.suite != "aes-256-gcm":
            raise PiiError(f"no key {key_id!r} to open personal field {path} of {record} (v1)")
        try:
            raw = base64.b64decode(encoded, validate=True)
            return AESGCM(key.secret).decrypt(raw[:NONCE], raw[NONCE:], key_id.encode()).decode()
        except (InvalidTag, ValueError):
            raise PiiError(f"personal field {path} of {record} failed to open (tampered or wrong key)") from None

    # -------------------------------------------------------------- rotation
    def stale(self, value: str) -> bool:
        """Whether a sealed value should be re-sealed: v1, another suite, or a recipient's
        key that is no longer that party's current one."""
        if value.startswith(PREFIX):
            return True
        sealed = Sealed.parse(value)
        if sealed.suite.name != self.suite.name:
            return True
        return any(self.keyring.sealing.get(p) is None or self.keyring.sealing[p].key_id != k
                   for p, k, _ in sealed.recipients)

    def reseal(self, value: str, *, record: str | None = None, path: str | None = None,
               subject: str | None = None, recipients: Sequence[str] | None = None) -> str:
        """The same plaintext sealed afresh with the recipients' current keys: same place,
        same recipients. A v1 value has neither, so the caller names them."""
        if value.startswith(PREFIX):
            if record is None or path is None or subject is None or not recipients:
                raise PiiError("re-sealing a v1 value needs its record, path, subject and recipients")
            return self.seal(self._open_v1(value, path, record), record=record, path=path, subject=subject,
                             recipients=recipients)
        sealed = Sealed.parse(value)
        return self.seal(self.open_anywhere(value), record=sealed.record, path=sealed.path, subject=sealed.subject,
                         recipients=sealed.parties)


# ------------------------------------------------------------------------------ records
def seal_record(registry: SchemaRegistry, full_name: str, record: dict, cipher: PiiCipher,
                recipients: Sequence[str], subject: str) -> dict:
    """A copy of `record` with every personal field sealed for `recipients`, bound to its path."""
    return registry.map_pii_paths(full_name, record, lambda path, value: cipher.seal(
        value, record=full_name, path=path, subject=subject, recipients=recipients))


def open_record(registry: SchemaRegistry, full_name: str, record: dict, cipher: PiiCipher, subject: str) -> dict:
    """A copy of `record` (or of a part of it holding some of its top-level fields) with every
    personal field opened where it lies; PiiError for one that does not open here."""
    return registry.map_pii_paths(full_name, record, lambda path, value: cipher.open(
        value, record=full_name, path=path, subject=subject))


def unsealed_fields(registry: SchemaRegistry, full_name: str, record: dict) -> list[str]:
    """Paths of personal fields holding a plaintext value (null is not a value)."""
    found: list[str] = []

    def note(path: str, value: Any) -> Any:
        if not is_sealed(value):
            found.append(path)
        return value

    registry.map_pii_paths(full_name, record, note)
    return found


# ------------------------------------------------------------------------------ key files
def write_key_file(path: Path, keys: Sequence[Key], comment: str = "") -> None:
    """Write a key file readable by its owner only (0600, written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# Tongban personal-data keys: id=base64(32 bytes) for AES-256-GCM or id=sm4:base64(16 bytes);\n"
                  "# the first key of the configured cipher seals, all open. Keep this file mode 600.\n")
        if comment:
            out.write(f"# {comment}\n")
        out.write("".join(key_line(k) + "\n" for k in keys))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
