"""python -m services.feedback"""

from services.feedback import handlers
from services.feedback.domain import FlagThresholds
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring


def wiring(settings: Settings) -> Wiring:
    return Wiring("feedback", inputs=handlers.INPUTS, handlers=handlers.make_handlers(FlagThresholds()),
                  keys=handlers.keys(), business_ids=handlers.business_ids())


if __name__ == "__main__":
    main("feedback", wiring)
