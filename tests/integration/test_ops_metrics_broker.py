"""`tongban metrics` against the real broker: its Prometheus endpoint shows a group's dead
letters, a replay group's lag and an application whose partner never answers, and they move."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner

from devtools.launcher import free_port
from tests.integration.test_ops_dlq_broker import write_dead_letters
from tests.integration.test_ops_stuck_broker import PARTNER, lifecycle, write
from tongban import topics
from tongban.ops.cli import cli
from tongban.ops.topics import ROOT

pytestmark = pytest.mark.integration

GROUP = "tongban-delivery"


def value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape_until(port: int, predicate, within: float = 60) -> str:
    deadline = time.monotonic() + within
    text = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            text = ""  # not listening yet
        if text and predicate(text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"the endpoint never showed what was expected; last scrape:\n{text[-3000:]}")


@pytest.fixture
def exporter(namespace):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tongban.ops.cli", "--namespace", namespace, "metrics", "--port", str(port),
         "--interval", "0.5", "--stuck-after", "2h"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_endpoint_shows_dead_letters_lag_and_stuck_applications_moving(namespace, exporter):
    dead = dict(group=namespace + GROUP)
    replay_group = dict(group=f"{namespace}tongban-operator-replay-{GROUP}", topic=namespace + topics.dlq(GROUP))
    scrape_until(exporter, lambda t: value(t, "tongban_dead_letters", **dead) == 0 and
                 value(t, "tongban_metrics_up") == 1)

    asyncio.run(write_dead_letters(namespace, GROUP, [(f"D{n}", "partner timeout", 0) for n in range(4)]))
    asyncio.run(write(namespace, lifecycle("SILENT-2", 3)))
    text = scrape_until(exporter, lambda t: (value(t, "tongban_dead_letters", **dead) or 0) >= 4)
    assert value(text, "tongban_stuck_applications", waiting_for=f"partner-{PARTNER}") == 1

    # A replay that stops after one dead letter leaves lag; finishing it takes the lag to 0.
    tongban = CliRunner()
    assert tongban.invoke(cli, ["--namespace", namespace, "dlq", "replay", GROUP, "--limit", "1"]).exit_code == 0

    def lag(t: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in t.splitlines()
                   if line.startswith("tongban_consumer_lag{") and all(f'{k}="{v}"' in line
                                                                       for k, v in replay_group.items()))

    scrape_until(exporter, lambda t: lag(t) >= 3)
    assert tongban.invoke(cli, ["--namespace", namespace, "dlq", "replay", GROUP]).exit_code == 0
    text = scrape_until(exporter, lambda t: value(t, "tongban_consumer_lag", **replay_group) is not None
                        and lag(t) == 0)
    labels = {name for labelled in re.findall(r"^tongban_\w+\{([^}]*)\}", text, re.M)
              for name in re.findall(r'(\w+)="', labelled)}
    assert labels == {"group", "topic", "partition", "stage", "waiting_for"}  # bounded, never personal
