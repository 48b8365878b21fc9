"""One hop of the faust-streaming chain as its own worker process:

    python -m devtools.bench.faust_hop faust PREFIX INDEX

An agent reads hop INDEX-1 and sends every record's bytes unchanged to hop INDEX (raw key
and value serializers, at-least-once, in-memory store, no web server, producer linger 5 ms). Faust's app id is
`PREFIX`bench-faust-hopINDEX, so its own topics live in the bench namespace too."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import faust

from devtools.bench.common import OUT, PARTITIONS, hop_topic, kafka_options


def make_app(prefix: str, index: int) -> faust.App:
    options = kafka_options()
    bootstrap = options["bootstrap_servers"]
    credentials = None
    if "sasl_plain_username" in options:  # the bench's own identity, as for the other chains
        credentials = faust.SASLCredentials(username=options["sasl_plain_username"],
                                            password=options["sasl_plain_password"],
                                            mechanism=options["sasl_mechanism"], ssl_context=options.get("ssl_context"))
    datadir = OUT / "faust" / f"{prefix}hop{index}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{prefix}bench-faust-hop{index}",
        broker=f"kafka://{bootstrap}",
        broker_credentials=credentials,
        value_serializer="raw",
        key_serializer="raw",
        processing_guarantee="at_least_once",
        store="memory://",
        topic_partitions=PARTITIONS,
        topic_allow_declare=True,
        web_enabled=False,
        producer_acks=-1,
        producer_linger=0.005,  # 5 ms, Kafka's own default since 4.0: twice the throughput of 0 here
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(hop_topic(prefix, index - 1), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)
    target = app.topic(hop_topic(prefix, index), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)

    async def forward(stream: AsyncIterator[Any]) -> AsyncIterator[None]:
        async for event in stream.events():  # type: ignore[attr-defined]
            await target.send(key=event.key, value=event.value)
            yield None

    app.agent(source, name=f"hop{index}")(forward)  # type: ignore[arg-type]
    return app


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "faust":
        sys.exit(__doc__)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    faust_app = make_app(sys.argv[2], int(sys.argv[3]))
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    faust_app.main()
