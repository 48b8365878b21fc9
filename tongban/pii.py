"""Field-level encryption of personal data, driven by the schemas' `"pii": true` marks.

Every event a Tongban writer produces has its personal fields sealed (AES-256-GCM) before
encoding, so they are encrypted on the bus and, since services keep what they receive as
received, at rest too. Only code that needs a plaintext opens it (verification checks an
ID number; a partner authority reads the applicant; the carrier reads the address).

A sealed value is `pii:v1:<key id>:<base64 of nonce + ciphertext>`; several keys may be
configured for rotation, the first one seals.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "pii:v1:"


class PiiError(ValueError):
    """A sealed value that cannot be opened (unknown key or tampered); never holds the value."""


def parse_keys(text: str) -> dict[str, bytes]:
    """`id=base64key` entries separated by commas or new lines; order kept, first seals."""
    keys: dict[str, bytes] = {}
    for entry in text.replace(",", "\n").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, _, encoded = entry.partition("=")
        key = base64.b64decode(encoded.strip(), validate=True)
        if not key_id.strip().isalnum() or len(key) != 32:
            raise ValueError("each key must be <alphanumeric id>=<base64 of 32 bytes>")
        keys[key_id.strip()] = key
    if not keys:
        raise ValueError("no key given")
    return keys


def new_key_line(key_id: str = "k1") -> str:
    return f"{key_id}={base64.b64encode(os.urandom(32)).decode()}"


def write_key_file(path: Path) -> bool:
    """Create a key file with one fresh key unless it exists; returns whether it made one."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Tongban personal-data keys: id=base64(32 bytes); the first seals.\n" + new_key_line() + "\n")
    path.chmod(0o600)
    return True


class PiiCipher:
    def __init__(self, keys: dict[str, bytes]) -> None:
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = next(iter(keys))

    def seal(self, value: str) -> str:
        if not isinstance(value, str):
            raise PiiError("personal fields must be strings to be sealed")
        if value.startswith(PREFIX):
            return value
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, value.encode(), self._current.encode())
        return f"{PREFIX}{self._current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, value: str) -> str:
        """The plaintext; a value that was never sealed (a partner that sends plaintext) is
        returned as it is."""
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return value
        key_id, _, encoded = value[len(PREFIX):].partition(":")
        aead = self._keys.get(key_id)
        if aead is None:
            raise PiiError(f"no key {key_id!r} to open a personal field")
        try:
            raw = base64.b64decode(encoded, validate=True)
            return aead.decrypt(raw[:12], raw[12:], key_id.encode()).decode()
        except (InvalidTag, ValueError):
            raise PiiError("a personal field failed to open (tampered or wrong key)") from None


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var/pii.keys")
    print(f"{target}: {'created with a new key' if write_key_file(target) else 'kept'}")
