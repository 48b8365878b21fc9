"""python -m services.intake"""

from services.intake import handlers
from services.intake.api import IntakeServicer
from services.intake.intake_pb2_grpc import add_IntakeServicer_to_server
from tongban.app import main
from tongban.runtime import ServiceRuntime


def build(settings, registry, db) -> ServiceRuntime:
    return ServiceRuntime(settings, registry, db, inputs=handlers.INPUTS, handlers=handlers.HANDLERS,
                          commands=handlers.COMMANDS)


def add_servicers(server, runtime: ServiceRuntime) -> None:
    add_IntakeServicer_to_server(IntakeServicer(runtime), server)


if __name__ == "__main__":
    main("intake", build, add_servicers)
