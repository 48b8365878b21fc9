"""python -m services.feedback"""

import tomllib
from pathlib import Path

from services.feedback import handlers
from services.feedback.domain import DuplicateRule, RectificationPolicies
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.workdays import WorkingCalendar

RULES = Path(__file__).with_name("rules.toml")  # rectification deadlines per locality, duplicate days


def wiring(settings: Settings) -> Wiring:
    with open(RULES, "rb") as fh:
        rules = tomllib.load(fh)
    calendar = WorkingCalendar.load()  # the SLA ledger's calendar, overrides included
    on_events, on_timers = handlers.make_handlers(RectificationPolicies.of(rules["rectification"]),
                                                  calendar.add_working_days, DuplicateRule(**rules["duplicates"]))
    return Wiring("feedback", inputs=handlers.INPUTS, handlers=on_events, timers=on_timers,
                  keys=handlers.keys(), business_ids=handlers.business_ids())


if __name__ == "__main__":
    main("feedback", wiring)
