"""Which partners exist, as declared in infra/topics.toml (the one place partners are listed)."""

from __future__ import annotations

import re

from tongban.ops.topics import load_declared

_DECISIONS = re.compile(r"^tongban\.partner\.([^.]+)\.decisions$")


def authorities() -> list[str]:
    """Partners that decide: those with a declared decisions stream."""
    return [m.group(1) for spec in load_declared("") if (m := _DECISIONS.match(spec.declared_name))]
