"""Who may open which personal data, and which keys each process holds.

Parties with keys: every partner declared in `infra/topics.toml` (`[partners]`: the
authorities and the carrier `ems`), the 12345 hotline, and the three Tongban services that
must read personal data. Routing and feedback never do; routing holds a key for its own
command topic only, feedback none.

| personal data on                         | sealed for (recipients)   | sealed by            |
|------------------------------------------|---------------------------|----------------------|
| `tongban.application.received`           | verification, delivery    | intake               |
| `tongban.partner.<P>.assignments`        | P                         | delivery (re-seals)  |
| `tongban.partner.ems.dispatches`         | ems                       | delivery (re-seals)  |
| `tongban.partner.wallet.dispatches`      | wallet                    | delivery (re-seals)  |
| `tongban.partner.<P>.submissions`        | P (intake opens, P's key) | P itself             |
| `tongban.commands.tongban-<service>`     | that service              | the service's API    |
| `tongban.feedback.ratings` (comment)     | intake                    | intake               |
| `tongban.feedback.workorders` (content)  | 12345                     | the 12345 hotline    |

Every other topic carries no personal field; a writer that tries is refused. Dead-letter,
retry and repartition topics carry records as they were, sealed for whoever they were sealed
for. Values are bound to their record and path, so delivery opens what intake sealed for it
and seals it again for the assigned partner (`services/delivery/handlers.py`): partner P's
assignment opens with P's key and no other partner's.

Key files: `<TONGBAN_PII_KEY_DIR>/<party>.keys` (default `var/pii/`, made by `make setup`
through `python -m tongban.ops.pii keys`, mode 600, git-ignored). A single party's process
may be given its own keys by TONGBAN_PII_KEYS or TONGBAN_PII_KEY_FILE instead; the current
keys of the parties it seals for always come from the key directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from tongban import paths, topics
from tongban.pii import DEFAULT_SUITE, SUITES, Key, Keyring, PiiError, current_key, parse_keys, suite_available

DEFAULT_KEY_DIR = paths.var_dir() / "pii"
LEGACY_KEY_FILE = paths.var_dir() / "pii.keys"  # v1: one key shared by every process
# Routing opens no event's personal fields: its key seals only its own command topic (an
# operator's review requests, whose free-text reasons are sealed like every request).
SERVICES_WITH_KEYS = ("intake", "verification", "delivery", "routing")
HOTLINE = "12345"
# Submissions: a partner seals for itself (it holds only its own key); intake opens them
# with the partner's key, as delivery holds it to seal assignments.
_PARTNER_OUT = re.compile(r"^tongban\.partner\.([^.]+)\.(assignments|dispatches|submissions)$")
_COMMANDS = re.compile(r"^tongban\.commands\.tongban-([a-z]+)$")


def recipients(topic: str) -> tuple[str, ...]:
    """The parties personal data on this (logical) topic is sealed for; () = none may travel."""
    if topic == topics.APPLICATION_RECEIVED:
        return ("verification", "delivery")
    if topic == topics.FEEDBACK_RATINGS:
        return ("intake",)
    if topic == topics.FEEDBACK_WORKORDERS:
        return (HOTLINE,)
    if match := _PARTNER_OUT.match(topic):
        return (match.group(1),)
    if match := _COMMANDS.match(topic):  # a service's requests, for itself alone
        return (match.group(1),)
    return ()


def seals_for(service: str) -> tuple[str, ...]:
    """The parties a service seals for (it holds their current keys)."""
    if service == "intake":
        return ("verification", "delivery", "intake")
    if service == "delivery":
        from tongban.partners import authorities  # reads infra/topics.toml (imports config: not at load)

        return (*authorities(), topics.CARRIER, topics.WALLET)
    return ()


def partners() -> list[str]:
    """Partner and feed ids declared in infra/topics.toml (`[partners]`, `[feeds]`)."""
    with open(paths.topics_file(), "rb") as declared:
        doc = tomllib.load(declared)
    return list(dict.fromkeys([*doc.get("partners", {}), *doc.get("feeds", {})]))


def parties() -> list[str]:
    """Every party that has keys."""
    return list(dict.fromkeys([*SERVICES_WITH_KEYS, *partners(), HOTLINE]))


def party_of(service: str, env: Mapping[str, str]) -> str | None:
    """The party a process opens as: TONGBAN_PII_PARTY, else the service itself if it reads
    personal data, else the partner of a `partner-<id>` process; None holds no key."""
    if env.get("TONGBAN_PII_PARTY"):
        return env["TONGBAN_PII_PARTY"]
    if service in SERVICES_WITH_KEYS:
        return service
    if service.startswith("partner-") and service.removeprefix("partner-") in parties():
        return service.removeprefix("partner-")
    return None


def key_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("TONGBAN_PII_KEY_DIR") or DEFAULT_KEY_DIR)


def key_file(party: str, env: Mapping[str, str] | None = None) -> Path:
    return key_dir(env) / f"{party}.keys"


def suite_of(env: Mapping[str, str]) -> str:
    suite = env.get("TONGBAN_PII_CIPHER") or DEFAULT_SUITE
    if suite not in SUITES:
        raise ValueError(f"TONGBAN_PII_CIPHER must be one of {', '.join(SUITES)}, got {suite!r}")
    if not suite_available(suite):
        raise ValueError(f"TONGBAN_PII_CIPHER={suite}: this build of cryptography/OpenSSL does not offer it")
    return suite


def read_party_keys(party: str, env: Mapping[str, str]) -> dict[str, Key]:
    path = key_file(party, env)
    try:
        text = path.read_text()
    except OSError:
        raise ValueError(f"no personal-data key for party {party}: create {path} (make setup, or "
                         f"python -m tongban.ops.pii keys)") from None
    try:
        return parse_keys(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _own_keys(party: str, env: Mapping[str, str]) -> dict[str, Key]:
    """TONGBAN_PII_KEYS, else TONGBAN_PII_KEY_FILE, else the party's file in the key directory."""
    if env.get("TONGBAN_PII_KEYS"):
        try:
            return parse_keys(env["TONGBAN_PII_KEYS"])
        except ValueError as exc:
            raise ValueError(f"TONGBAN_PII_KEYS: {exc}") from None
    if env.get("TONGBAN_PII_KEY_FILE"):
        path = Path(env["TONGBAN_PII_KEY_FILE"])
        try:
            return parse_keys(path.read_text())
        except OSError:
            raise ValueError(f"no personal-data key: TONGBAN_PII_KEY_FILE names {path}, which cannot be read") \
                from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return read_party_keys(party, env)


def load_keyring(service: str, env: Mapping[str, str]) -> Keyring:
    """The keyring of a process: its party's keys and the current keys of the parties it
    seals for. Raises ValueError naming the variable or file; a process without a party
    (routing, feedback, tools) gets an empty keyring."""
    suite = suite_of(env)
    party = party_of(service, env)
    if party is None:
        return Keyring(suite=suite)
    own = _own_keys(party, env)
    others = {p: read_party_keys(p, env) for p in seals_for(service) if p != party}
    try:
        return Keyring.of(party, own, suite, others)
    except PiiError as exc:
        raise ValueError(f"TONGBAN_PII_CIPHER={suite}: {exc}") from None


def party_keyring(party: str, env: Mapping[str, str] | None = None) -> Keyring:
    """One party's own keyring from the key directory (a simulated partner, a test)."""
    env = os.environ if env is None else env
    return Keyring.of(party, read_party_keys(party, env), suite_of(env))


def operator_keyring(env: Mapping[str, str] | None = None) -> Keyring:
    """Every party's keys: opens anything, seals for anyone (the re-seal tool only)."""
    env = os.environ if env is None else env
    suite = suite_of(env)
    opening = {p: read_party_keys(p, env) for p in parties() if key_file(p, env).exists()}
    sealing = {}
    for party, keys in opening.items():
        # This party cannot be sealed for under `suite` until it has such a key.
        with contextlib.suppress(PiiError):
            sealing[party] = current_key(keys, suite, party)
    return Keyring(None, opening, sealing, suite)
