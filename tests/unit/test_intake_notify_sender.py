"""The local notification sender: one line per notice, a repeat dropped by notice_id, also
after a restart (the sender is at least once); nothing personal in a message. No broker."""

import json
from datetime import UTC, datetime

from services.intake import domain, notify

T0 = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
NOTICE = {"notice_id": "n-1", "application_id": "TB1", "application_number": "430102-20261204-0000001-X",
          "kind": domain.SUPPLEMENT, "reasons": ["ARTICLES: 公司章程未签字"], "remedy": "", "deadline": T0,
          "served_at": T0}


async def test_a_notice_is_written_once_even_when_delivered_again_and_after_a_restart(tmp_path):
    sink = tmp_path / "messages.jsonl"
    assert await notify.deliver([NOTICE, NOTICE], notify.FileSender(sink)) == 2  # handed over twice
    assert await notify.deliver([NOTICE, {**NOTICE, "notice_id": "n-2", "kind": domain.ACCEPTANCE}],
                                notify.FileSender(sink)) == 2
    lines = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [(m["notice_id"], m["kind"]) for m in lines] == [("n-1", "SUPPLEMENT"), ("n-2", "ACCEPTANCE")]
    assert lines[0]["text"] == \
        "您的申请（编号430102-20261204-0000001-X）需要补正材料，请于2026-12-04前补正，详情请查询办件进度。"
    assert "公司章程" not in sink.read_text(), "reasons are read in Track, not sent"


async def test_without_a_file_the_sender_writes_to_the_console(capsys):
    sender = notify.local_notifier({})
    await notify.deliver([NOTICE, NOTICE], sender)
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["notice_id"] for line in out] == ["n-1"]


def test_the_sink_file_comes_from_the_environment(tmp_path):
    assert notify.local_notifier({notify.NOTIFY_FILE: str(tmp_path / "m.jsonl")}).path == tmp_path / "m.jsonl"
