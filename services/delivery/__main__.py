"""python -m services.delivery"""

from services.delivery import handlers
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.partners import authorities


def wiring(settings: Settings) -> Wiring:
    return Wiring("delivery", inputs=handlers.inputs(authorities()),
                  handlers=handlers.make_handlers(settings.pii_cipher()))


if __name__ == "__main__":
    main("delivery", wiring)
