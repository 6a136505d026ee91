"""Preparing a campaign in several processes gives the very bytes one process gives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from campaign.loading import Options, load_campaign
from campaign.prepare import prepare
from campaign.store import MessageStore

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def write_campaign(folder: Path, count: int) -> Path:
    lines = [
        "campaign:",
        '  id: "parallel-test"',
        '  subject: "Letter to {{ recipient.name }}"',
        '  from: "Office <office@example.org>"',
        "recipients:",
    ]
    for number in range(count):
        lines += [
            f'  - id: "r{number:04d}"',
            f'    name: "Zoë Nummer {number}"',
            f'    emails: ["r{number}@example.net", "r{number}.b@example.org"]',
        ]
    (folder / "templates").mkdir()
    (folder / "templates" / "letter.txt.j2").write_text(
        "Dear {{ recipient.name }},\nÅ letter of {{ recipients | length }}.\n", "utf-8"
    )
    (folder / "templates" / "letter.html.j2").write_text(
        "<p>Dear {{ recipient.name }}</p>\n", "utf-8"
    )
    path = folder / "recipients.yaml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def test_two_worker_processes_build_the_same_messages_as_one(tmp_path: Path) -> None:
    source = load_campaign(Options(write_campaign(tmp_path, 40)))
    with MessageStore() as serial_store, MessageStore() as parallel_store:
        serial = prepare(source, source.recipients, serial_store, clock=lambda: NOW, workers=1)
        parallel = prepare(source, source.recipients, parallel_store, clock=lambda: NOW, workers=2)
        assert [d.recipient_id for d in parallel.drafts] == [r.id for r in source.recipients]
        assert {d.segment for d in parallel.drafts} == {1, 2}
        assert [parallel.data(d) for d in parallel.drafts] == [
            serial.data(d) for d in serial.drafts
        ]
        assert [d.sha256 for d in parallel.drafts] == [d.sha256 for d in serial.drafts]
