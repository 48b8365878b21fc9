"""The simulated 好差评 channels: rating pads at the halls' windows, the online portal, the
mobile apps and the government websites, each writing its ratings on its own topic as its
own principal (feeds `haochaping-<channel>` in infra/topics.toml, Kafka user
partner-haochaping-<channel>), as the real channels do beside intake's Rate.

    python -m sim.raters [--applications N] [--seed S]        (devtools.demo runs it once)

The demo's raters follow the rules feedback holds them to, and break them on purpose once:
every application is rated once online (一事一评) on one of the online channels, some also
at the hall for their visit (一次一评), a 代收代办 case rates both the receiving window and
the deciding authority, and one rater tries the portal after the app (refused, a dead letter
with the reason). Ratings carry no comment: a channel topic has no recipient to seal one for
(tongban.pii_policy), so free text stays with the channel.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.config import Settings, load_settings
from tongban.events import encode_event, now_utc

# channel name -> (the ServiceRating channel it gives, its topic); its feed id is haochaping-<name>
CHANNELS = {"hall": ("ONSITE", topics.FEEDBACK_RATINGS_HALL), "portal": ("ONLINE", topics.FEEDBACK_RATINGS_PORTAL),
            "mobile": ("MOBILE", topics.FEEDBACK_RATINGS_MOBILE),
            "website": ("WEBSITE", topics.FEEDBACK_RATINGS_WEBSITE)}
ONLINE = ("portal", "mobile", "website")
INDICATOR_SET = "GB/T 39735-2020:v1"


def feed_id(channel: str) -> str:
    return f"haochaping-{channel}"


def principal(channel: str) -> str:
    return f"partner-{feed_id(channel)}"


@dataclass(frozen=True)
class Rating:
    """One rating as a channel gives it; `channel` is the channel's name (hall, portal, ...)."""

    rating_id: str
    application_id: str | None
    matter_code: str
    division_code: str
    party: str
    level: int
    channel: str
    rated_role: str = "SERVICE"
    interaction_id: str | None = None
    after: timedelta = timedelta(0)


def rating_record(registry: SchemaRegistry, rating: Rating, at: datetime) -> tuple[str, str, bytes]:
    """(channel, key, framed ServiceRating) of one rating, given `after` the feed's start `at`."""
    body: dict[str, Any] = {
        "rating_id": rating.rating_id, "application_id": rating.application_id, "matter_code": rating.matter_code,
        "division_code": rating.division_code, "party": rating.party, "level": rating.level,
        "channel": CHANNELS[rating.channel][0], "comment": None, "rated_at": at + rating.after,
        "rated_role": rating.rated_role, "interaction_id": rating.interaction_id, "indicator_set": INDICATOR_SET}
    key = rating.application_id or rating.rating_id
    _, value = encode_event(registry, topics.SERVICE_RATING_EVENT, body, cause_id=rating.rating_id,
                            correlation_id=key, source_system=feed_id(rating.channel),
                            source_partner=feed_id(rating.channel))
    return rating.channel, key, value


# The demo's matters × division and who decides them (the home province's departments, 430000).
DEMO_MATTERS = [("KSTB-MKT-01", "430102", "430000"), ("KSTB-EDU-03", "431200", "430000")]
PROXY_CASE = ("KSTB-SOC-02", "430102", "420100", "420000")  # received in Changsha, decided in Hubei


def demo_ratings(applications: int, rng: random.Random) -> list[Rating]:
    """Ratings of `applications` made-up applications: the first matter poorly rated (a
    flag in the making), the second well; a 代收代办 case rated on both sides; one rater's
    second online rating of an application (feedback refuses it: 一事一评)."""
    run = f"{rng.randrange(16**6):06x}"
    out = []
    for n in range(applications):
        matter, division, party = DEMO_MATTERS[n % len(DEMO_MATTERS)]
        application = f"RATE-{run}-{n:03d}"
        poor = n % len(DEMO_MATTERS) == 0
        level = rng.choice((3, 4, 5) if poor else (1, 1, 2))
        online = rng.choice(ONLINE)
        out.append(Rating(f"{application}-{online}", application, matter, division, party, level, online,
                          after=timedelta(minutes=n)))
        if n % 3 == 0:  # a visit to the hall too, rated on the pad there
            out.append(Rating(f"{application}-hall", application, matter, division, party, rng.choice((1, 2)),
                              "hall", interaction_id=f"{application}-visit-1", after=timedelta(minutes=n, seconds=30)))
    matter, receiving, deciding_division, deciding = PROXY_CASE
    proxy = f"RATE-{run}-proxy"
    out += [Rating(f"{proxy}-window", proxy, matter, receiving, receiving, 1, "hall", "RECEIVING", f"{proxy}-visit-1"),
            Rating(f"{proxy}-authority", proxy, matter, deciding_division, deciding, 4, "portal", "DECIDING")]
    first = out[0]
    again = next(c for c in ONLINE if c != first.channel)  # the same rater, another online channel
    out.append(Rating(f"{first.application_id}-{again}", first.application_id, first.matter_code,
                      first.division_code, first.party, 5, again, after=timedelta(hours=1)))
    return out


async def publish(settings: Settings, records: Iterable[tuple[str, str, bytes]]) -> int:
    """Write each channel's records in order, as that channel's principal."""
    by_channel: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for channel, key, value in records:
        by_channel[channel].append((key, value))
    count = 0
    for channel, rows in by_channel.items():
        producer = AIOKafkaProducer(**settings.as_principal(principal(channel)).kafka_client_options(), acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for key, value in rows:
                await producer.send_and_wait(settings.topic(CHANNELS[channel][1]), key=key.encode(), value=value)
                count += 1
        finally:
            await producer.stop()
    return count


async def feed_demo(applications: int = 12, seed: int | None = None) -> int:
    """The demo's ratings (TONGBAN_* environment, each channel as itself); the ratings written."""
    settings = load_settings("sim-raters")  # a tool's settings; each channel connects as its own principal
    registry = SchemaRegistry.load()
    start = now_utc()
    return await publish(settings, (rating_record(registry, r, start)
                                    for r in demo_ratings(applications, random.Random(seed))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--applications", type=int, default=12)
    parser.add_argument("--seed", type=int, help="repeat a run's ratings (the same ids: counted once)")
    args = parser.parse_args()
    print(f"好差评: {asyncio.run(feed_demo(args.applications, args.seed))} ratings written by the channels")


if __name__ == "__main__":
    main()
