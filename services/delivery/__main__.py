"""python -m services.delivery"""

import os
import secrets
from datetime import timedelta

from services.delivery import acceptance, bundles, handlers, matters, verdicts
from services.delivery.api import DeliveryServicer
from services.delivery.channels.base import Deployment, Policy
from services.delivery.delivery_pb2_grpc import add_DeliveryServicer_to_server
from tongban import paths
from tongban.app import main
from tongban.config import Settings
from tongban.handling import Wiring
from tongban.partners import authorities
from tongban.runtime import ServiceRuntime

SECRET_FILE = paths.var_dir() / "delivery" / "dispatch.secret"


def dispatch_secret() -> bytes:
    """The key dispatch ids are made with (hex in TONGBAN_DISPATCH_SECRET, else var/delivery/
    dispatch.secret, made once, mode 600). Every delivery instance must hold the same one, and
    keep it: a replay after a change would make a new dispatch id."""
    if os.environ.get("TONGBAN_DISPATCH_SECRET"):
        return bytes.fromhex(os.environ["TONGBAN_DISPATCH_SECRET"])
    SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        with os.fdopen(os.open(SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as made:
            made.write(secrets.token_hex(32))
    except FileExistsError:
        pass
    return bytes.fromhex(SECRET_FILE.read_text().strip())


def _seconds(name: str, default: timedelta) -> timedelta:
    value = os.environ.get(name)
    return timedelta(seconds=float(value)) if value else default


def result_policy() -> Policy:
    """TONGBAN_DELIVERY_POST_ATTEMPTS, TONGBAN_DELIVERY_RETRY_AFTER_SECONDS,
    TONGBAN_DELIVERY_PICKUP_REMINDER_SECONDS, TONGBAN_DELIVERY_UNCOLLECTED_REPORT_SECONDS."""
    default = Policy()
    return Policy(post_attempts=int(os.environ.get("TONGBAN_DELIVERY_POST_ATTEMPTS") or default.post_attempts),
                  retry_after=_seconds("TONGBAN_DELIVERY_RETRY_AFTER_SECONDS", default.retry_after),
                  pickup_reminder_after=_seconds("TONGBAN_DELIVERY_PICKUP_REMINDER_SECONDS",
                                                 default.pickup_reminder_after),
                  uncollected_report_after=_seconds("TONGBAN_DELIVERY_UNCOLLECTED_REPORT_SECONDS",
                                                    default.uncollected_report_after))


def wiring(settings: Settings) -> Wiring:
    results = Deployment(secret=dispatch_secret(), matters=matters.catalogue(), policy=result_policy())
    # TONGBAN_SUPPLEMENT_PERIOD_SECONDS: how long an applicant has to supplement (补正);
    # TONGBAN_COMMITMENT_CHECK_AFTER_SECONDS: when an approval under 告知承诺 is checked;
    # TONGBAN_BUNDLE_HOLD_SECONDS: how long a bundle's results wait for its other applications.
    every = handlers.make_handlers(
        settings.pii_cipher(), results=results,
        supplement_period=_seconds("TONGBAN_SUPPLEMENT_PERIOD_SECONDS", acceptance.SUPPLEMENT_PERIOD),
        commitment_check_after=_seconds("TONGBAN_COMMITMENT_CHECK_AFTER_SECONDS", acceptance.COMMITMENT_CHECK_AFTER),
        bundle_hold=_seconds("TONGBAN_BUNDLE_HOLD_SECONDS", bundles.HOLD))
    timers = {name: every.pop(name)
              for name in (*acceptance.TIMERS, *handlers.CHANNEL_TIMERS, *handlers.BUNDLE_TIMERS)}
    commands = {name: every.pop(name) for name in handlers.COMMANDS}
    commands |= verdicts.trial_handlers(commands)  # the API's requests are tried by the owner first
    return Wiring("delivery", inputs=handlers.inputs(authorities()), handlers=every, timers=timers,
                  commands=commands, keys=handlers.keys())


def add_servicers(server, runtime: ServiceRuntime) -> None:
    add_DeliveryServicer_to_server(DeliveryServicer(runtime), server)


if __name__ == "__main__":
    main("delivery", wiring, add_servicers)
