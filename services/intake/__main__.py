"""python -m services.intake"""

import asyncio
import functools

from services.intake import handlers
from services.intake.api import IntakeServicer
from services.intake.catalogue import LearnedCatalogue
from services.intake.intake_pb2_grpc import add_IntakeServicer_to_server
from tongban import windows
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.runtime import ServiceRuntime
from tongban.sharing.access import consultations

CATALOGUE = LearnedCatalogue()
_following: set[asyncio.Task] = set()  # the catalogue reader, kept until the process ends


def wiring(settings: Settings) -> Wiring:
    return Wiring("intake", inputs=handlers.INPUTS, handlers=handlers.HANDLERS, commands=handlers.COMMANDS)


def add_servicers(server, runtime: ServiceRuntime) -> None:
    # The formal check uses the catalogue routing publishes and the shared window registry.
    _following.add(asyncio.get_running_loop().create_task(CATALOGUE.follow(runtime.settings, runtime.registry),
                                                          name="learn-catalogue"))
    access_log = functools.partial(consultations, tls_dir=runtime.settings.grpc_tls_dir)
    add_IntakeServicer_to_server(IntakeServicer(runtime, CATALOGUE, windows.registry(), access_log), server)


if __name__ == "__main__":
    main("intake", wiring, add_servicers)
