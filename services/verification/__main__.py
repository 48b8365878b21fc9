"""python -m services.verification"""


from services.verification import handlers, matters
from services.verification.sharing import SharingClient
from tongban.app import keep_beside, main
from tongban.codec import SchemaRegistry
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.sharing import governance


def wiring(settings: Settings) -> Wiring:
    catalogue = governance.load_catalogue()
    client = SharingClient(catalogue, governance.load_demands(catalogue), tls_dir=settings.grpc_tls_dir)
    view = matters.MatterView(matters.load())
    keep_beside(view.start_following(settings, SchemaRegistry.load()))  # called inside the service's loop
    events, timers = handlers.make_handlers(settings.pii_cipher(), client, view)
    return Wiring("verification", inputs=handlers.INPUTS, handlers=events, timers=timers)


if __name__ == "__main__":
    main("verification", wiring)
