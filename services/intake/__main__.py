"""python -m services.intake"""

import asyncio

from services.intake import handlers
from services.intake.api import IntakeServicer
from services.intake.catalogue import LearnedCatalogue
from services.intake.intake_pb2_grpc import add_IntakeServicer_to_server
from tongban import windows
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.runtime import ServiceRuntime

CATALOGUE = LearnedCatalogue()
_following: set[asyncio.Task] = set()  # the catalogue reader, kept until the process ends


def wiring(settings: Settings) -> Wiring:
    return Wiring("intake", inputs=handlers.INPUTS, handlers=handlers.HANDLERS, commands=handlers.COMMANDS)


def add_servicers(server, runtime: ServiceRuntime) -> None:
    # The formal check uses the catalogue routing publishes and the shared window registry.
    _following.add(asyncio.get_running_loop().create_task(CATALOGUE.follow(runtime.settings, runtime.registry),
                                                          name="learn-catalogue"))
    add_IntakeServicer_to_server(IntakeServicer(runtime, CATALOGUE, windows.registry()), server)


if __name__ == "__main__":
    main("intake", wiring, add_servicers)
