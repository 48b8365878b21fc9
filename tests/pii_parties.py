"""Personal-data keys for tests: a fresh key per party, made at import (never var/pii/)."""

from __future__ import annotations

from collections.abc import Sequence

from tongban.pii import Key, Keyring, PiiCipher, new_key

PARTIES = ("intake", "verification", "delivery", "420000", "440000", "ems", "wallet", "12345")
KEYS: dict[str, dict[str, Key]] = {party: {key.key_id: key} for party in PARTIES for key in [new_key()]}
RECEIVED = "tongban.application.ApplicationReceived"


def cipher(party: str, seals_for: Sequence[str] = ()) -> PiiCipher:
    """What `party`'s process holds: its own key, and the current keys of `seals_for`."""
    return PiiCipher(Keyring.of(party, KEYS[party], seals_for={p: KEYS[p] for p in seals_for}))


def seal(value: str, record: str, path: str, subject: str, recipients: Sequence[str]) -> str:
    """`value` as the party that writes `record` would seal it for `recipients`."""
    writer = PiiCipher(Keyring(None, {}, {p: next(iter(KEYS[p].values())) for p in recipients}))
    return writer.seal(value, record=record, path=path, subject=subject, recipients=recipients)


def seal_received(value: str | None, path: str, application_id: str) -> str | None:
    """A personal field of an ApplicationReceived, as intake seals it (for verification and delivery)."""
    return None if value is None else seal(value, RECEIVED, path, application_id, ("verification", "delivery"))


def sealed_by(service: str, topic: str) -> dict:
    """`encode_event`'s cipher and recipients for `service` writing to `topic`, with the keys the
    running stack uses (var/pii/): what a test needs to write as that service would."""
    import os

    from tongban import pii_policy

    return {"cipher": PiiCipher(pii_policy.load_keyring(service, os.environ)),
            "recipients": pii_policy.recipients(topic)}


def stack_cipher(party: str) -> PiiCipher:
    """A party's own cipher with the keys the running stack uses (var/pii/<party>.keys)."""
    from tongban import pii_policy

    return PiiCipher(pii_policy.party_keyring(party))


def seal_v1(value: str, key: Key) -> str:
    """What the v1 code wrote: one shared key, its id as the only associated data."""
    import base64
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tongban.pii import PREFIX

    nonce = os.urandom(12)
    sealed = AESGCM(key.secret).encrypt(nonce, value.encode(), key.key_id.encode())
    return f"{PREFIX}{key.key_id}:{base64.b64encode(nonce + sealed).decode()}"
