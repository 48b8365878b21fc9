"""What delivery knows of the catalogue: for each matter, whether its result may go by post
and what kind of result it is.

Read from the catalogue's data file (services/routing/catalogue.toml, the catalogue's one
source; delivery does not import routing's code). When routing publishes MatterChanged for
every matter, delivery can keep this from the compacted catalogue topic instead."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CATALOGUE = Path(__file__).resolve().parents[1] / "routing" / "catalogue.toml"
PAPER_LICENCE = "PAPER_LICENCE"  # a result on paper only: no e-licence to record in a wallet


@dataclass(frozen=True)
class Matter:
    postal_delivery: bool = False
    result_type: str = ""  # PAPER_LICENCE, E_LICENCE or REGISTRATION; "" when the catalogue does not say


def load(path: Path = CATALOGUE) -> dict[str, Matter]:
    with path.open("rb") as data:
        entries = tomllib.load(data).get("matter", [])
    return {e["code"]: Matter(e.get("postal_delivery") is True, e.get("result_type", "")) for e in entries}


def catalogue(path: Path = CATALOGUE) -> Callable[[str], Matter]:
    """The matter by code; one not in the catalogue allows nothing beyond the default."""
    known = load(path)
    return lambda code: known.get(code, Matter())
