"""python -m services.verification"""

from services.verification import handlers
from tongban.app import main
from tongban.runtime import ServiceRuntime


def build(settings, registry, db) -> ServiceRuntime:
    return ServiceRuntime(settings, registry, db, inputs=handlers.INPUTS,
                          handlers=handlers.make_handlers(settings.pii_cipher()))


if __name__ == "__main__":
    main("verification", build)
