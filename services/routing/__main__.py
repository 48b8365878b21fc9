"""python -m services.routing"""

from services.routing import handlers
from services.routing.domain import Catalogue, PartnerRegistry
from services.routing.workdays import WorkingCalendar
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring


def wiring(settings: Settings) -> Wiring:
    rules = handlers.make_handlers(Catalogue.load(), PartnerRegistry.load(), WorkingCalendar.load())
    return Wiring("routing", inputs=handlers.INPUTS, handlers=rules)


if __name__ == "__main__":
    main("routing", wiring)
