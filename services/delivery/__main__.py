"""python -m services.delivery"""

from services.delivery import handlers
from tongban.app import main
from tongban.partners import authorities
from tongban.runtime import ServiceRuntime


def build(settings, registry, db) -> ServiceRuntime:
    return ServiceRuntime(settings, registry, db, inputs=handlers.inputs(authorities()), handlers=handlers.HANDLERS)


if __name__ == "__main__":
    main("delivery", build)
