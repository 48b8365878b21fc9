"""python -m services.intake"""

from services.intake import handlers
from services.intake.api import IntakeServicer
from services.intake.intake_pb2_grpc import add_IntakeServicer_to_server
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.runtime import ServiceRuntime


def wiring(settings: Settings) -> Wiring:
    return Wiring("intake", inputs=handlers.INPUTS, handlers=handlers.HANDLERS, commands=handlers.COMMANDS)


def add_servicers(server, runtime: ServiceRuntime) -> None:
    add_IntakeServicer_to_server(IntakeServicer(runtime), server)


if __name__ == "__main__":
    main("intake", wiring, add_servicers)
