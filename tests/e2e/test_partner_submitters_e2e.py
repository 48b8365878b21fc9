"""The demo's partner submissions over the real stack: simulated Hubei and Guangdong send
PartnerSubmissions as themselves and read their acknowledgements; intake numbers the valid
ones (seen at an independent consumer of the lifecycle topic) and refuses the one with a wrong
check digit on Guangdong's own topic, naming the field and not the value. The numbered
application's envelope names the partner (source_partner)."""

import re

import pytest

from sim import submitters
from tests.support import Sink
from tongban import topics

pytestmark = pytest.mark.integration

ACKS = [topics.partner_acknowledgements(p) for p in ("420000", "440000")]


async def test_the_demos_partners_submit_and_hear_their_application_numbers(stack, namespace):
    lines = await submitters.feed_demo(stack.env)

    assert len(lines) == 3
    hubei, guangdong, wrong = lines
    numbers = [m.group(1) for line in (hubei, guangdong) if (m := re.search(r": received as (\S+)$", line))]
    assert len(numbers) == 2, lines
    assert wrong.startswith("partner 440000: the same with a wrong check digit")
    assert ": refused: applicant.id_number" in wrong
    assert "示例辛" not in wrong

    async with Sink(namespace, [*ACKS, topics.APPLICATION_RECEIVED]) as sink:
        def numbered(seen) -> bool:
            return {e.get("application_number") for e in seen.events(topics.APPLICATION_RECEIVED_EVENT)} >= set(numbers)

        seen = await sink.wait_for(numbered)
    answered = {a["application_number"]: a for a in seen.events(topics.SUBMISSION_RECEIVED_EVENT)}
    assert {answered[n]["_topic"] for n in numbers} == set(ACKS)  # each partner heard on its own topic
    for number in numbers:
        [received] = [e for e in seen.events(topics.APPLICATION_RECEIVED_EVENT) if e["application_number"] == number]
        assert received["channel"] == "PARTNER"
        assert received["application_id"] == answered[number]["application_id"]
        # published by intake, naming the partner whose window received it (the topic it answered on)
        assert received["envelope"]["source_system"] == "tongban-intake"
        assert received["envelope"]["source_partner"] == answered[number]["_topic"].split(".")[2]
    [refused] = seen.events(topics.SUBMISSION_REFUSED_EVENT)
    assert refused["_topic"] == topics.partner_acknowledgements("440000")
