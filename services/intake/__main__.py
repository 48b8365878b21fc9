"""python -m services.intake"""

import asyncio
import functools

from services.intake import handlers, notify
from services.intake.api import IntakeServicer
from services.intake.catalogue import LearnedCatalogue
from services.intake.intake_pb2_grpc import add_IntakeServicer_to_server
from services.intake.partner_feed import PartnerFeed, submitters
from tongban import windows
from tongban.app import keep_beside, main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.pii import PiiCipher
from tongban.pii_policy import party_keyring
from tongban.runtime import ServiceRuntime
from tongban.sharing.access import consultations

CATALOGUE = LearnedCatalogue()


def wiring(settings: Settings) -> Wiring:
    return Wiring("intake", inputs=handlers.INPUTS, handlers=handlers.HANDLERS, commands=handlers.COMMANDS,
                  keys=handlers.KEYS)


def add_servicers(server, runtime: ServiceRuntime) -> None:
    # The formal check uses the catalogue routing publishes and the shared window registry.
    loop = asyncio.get_running_loop()
    keep_beside(loop.create_task(CATALOGUE.follow(runtime.settings, runtime.registry), name="learn-catalogue"))
    keep_beside(loop.create_task(notify.run_sender(runtime.settings, runtime.registry, notify.local_notifier()),
                                 name="send-notices"))
    # Partners seal their submissions for themselves: intake opens them with each one's key.
    openers = {partner: PiiCipher(party_keyring(partner)) for partner in submitters()}
    feed = PartnerFeed(runtime, runtime.registry, openers, CATALOGUE, windows.registry())
    keep_beside(loop.create_task(feed.follow(runtime.settings), name="partner-submissions"))
    access_log = functools.partial(consultations, tls_dir=runtime.settings.grpc_tls_dir)
    add_IntakeServicer_to_server(IntakeServicer(runtime, CATALOGUE, windows.registry(), access_log), server)


if __name__ == "__main__":
    main("intake", wiring, add_servicers)
