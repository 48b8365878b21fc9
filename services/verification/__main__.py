"""python -m services.verification"""

from services.verification import handlers
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring


def wiring(settings: Settings) -> Wiring:
    return Wiring("verification", inputs=handlers.INPUTS, handlers=handlers.make_handlers(settings.pii_cipher()))


if __name__ == "__main__":
    main("verification", wiring)
