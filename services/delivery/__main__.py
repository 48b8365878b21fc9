"""python -m services.delivery"""

import re

from services.delivery import handlers
from tongban.app import main
from tongban.ops.topics import load_declared
from tongban.runtime import ServiceRuntime

_DECISIONS = re.compile(r"^tongban\.partner\.([^.]+)\.decisions$")


def authorities() -> list[str]:
    """Partners that decide: those with a declared decisions stream."""
    return [m.group(1) for spec in load_declared("") if (m := _DECISIONS.match(spec.declared_name))]


def build(settings, registry, db) -> ServiceRuntime:
    return ServiceRuntime(settings, registry, db, inputs=handlers.inputs(authorities()), handlers=handlers.HANDLERS)


main("delivery", build)
