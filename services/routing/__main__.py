"""python -m services.routing"""

from datetime import timedelta

from services.routing import handlers
from services.routing.api import RoutingApi
from services.routing.domain import Catalogue, PartnerRegistry
from services.routing.ledger import SlaPolicy
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.workdays import WorkingCalendar

# The catalogue and partner registry, loaded (and checked) once: the rules, the query API
# and the catalogue publication all work from the same version.
API = RoutingApi(Catalogue.load(), PartnerRegistry.load())


def wiring(settings: Settings) -> Wiring:
    calendar = WorkingCalendar.load()
    clock = handlers.SlaClock(timedelta(days=settings.sla_clock_ahead_days))
    policy = SlaPolicy.load()
    rules = handlers.make_handlers(API.catalogue, API.partners, calendar, policy, clock)
    commands = {name: rules.pop(name) for name in handlers.COMMANDS}
    timers = {**handlers.make_timers(calendar, policy, clock), **{name: rules.pop(name) for name in handlers.TIMERS}}
    return Wiring("routing", inputs=handlers.INPUTS, handlers=rules, commands=commands, keys=handlers.keys(),
                  timers=timers)


if __name__ == "__main__":
    main("routing", wiring, API.add_servicers)
