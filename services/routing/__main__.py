"""python -m services.routing"""

from services.routing import handlers
from services.routing.domain import Catalogue, PartnerRegistry
from services.routing.workdays import WorkingCalendar
from tongban.app import main
from tongban.runtime import ServiceRuntime


def build(settings, registry, db) -> ServiceRuntime:
    rules = handlers.make_handlers(Catalogue.load(), PartnerRegistry.load(), WorkingCalendar.load())
    return ServiceRuntime(settings, registry, db, inputs=handlers.INPUTS, handlers=rules)


if __name__ == "__main__":
    main("routing", build)
