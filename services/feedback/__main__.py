"""python -m services.feedback"""

from services.feedback import handlers
from services.feedback.domain import FlagThresholds
from tongban.app import main
from tongban.runtime import ServiceRuntime


def build(settings, registry, db) -> ServiceRuntime:
    return ServiceRuntime(settings, registry, db, inputs=handlers.INPUTS,
                          handlers=handlers.make_handlers(FlagThresholds()), keys=handlers.keys())


if __name__ == "__main__":
    main("feedback", build)
