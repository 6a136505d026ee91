"""Preparing: several processes give the very bytes one gives; each draft names its bytes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from campaign.errors import ValidationErrors
from campaign.loading import Options, load_campaign
from campaign.models import Mailbox
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


def test_two_processes_build_the_very_bytes_one_process_builds(tmp_path: Path) -> None:
    source = load_campaign(Options(write_campaign(tmp_path, 40)))
    with MessageStore() as serial_store, MessageStore() as parallel_store:
        serial = prepare(source, source.recipients, serial_store, clock=lambda: NOW, workers=1)
        parallel = prepare(source, source.recipients, parallel_store, clock=lambda: NOW, workers=2)
        assert [d.recipient_id for d in parallel.drafts] == [r.id for r in source.recipients]
        assert [parallel.data(d) for d in parallel.drafts] == [
            serial.data(d) for d in serial.drafts
        ]
        assert [d.sha256 for d in parallel.drafts] == [d.sha256 for d in serial.drafts]


def test_a_problem_found_in_another_process_names_its_recipient_and_line(
    tmp_path: Path,
) -> None:
    path = write_campaign(tmp_path, 40)
    (tmp_path / "templates" / "letter.txt.j2").write_text(
        "{% if recipient.id == 'r0033' %}{{ recipient.missing }}{% endif %}Hi\n", "utf-8"
    )
    source = load_campaign(Options(path))
    with MessageStore() as store, pytest.raises(ValidationErrors) as raised:
        prepare(source, source.recipients, store, clock=lambda: NOW, workers=2)
    [problem] = raised.value.errors
    assert problem.recipient == "r0033"
    assert problem.line == 1 and problem.field == "missing"
    assert problem.path == str(tmp_path / "templates" / "letter.txt.j2")


def test_each_draft_describes_the_bytes_it_points_to(tmp_path: Path) -> None:
    source = load_campaign(Options(write_campaign(tmp_path, 12)))
    with MessageStore() as store:
        prepared = prepare(source, source.recipients, store, clock=lambda: NOW, workers=2)
        assert len(prepared.drafts) == 12
        for recipient, draft in zip(source.recipients, prepared.drafts, strict=True):
            data = prepared.data(draft)
            message = BytesParser(policy=policy.default).parsebytes(data)
            assert draft.recipient_id == recipient.id
            assert draft.filename == f"{recipient.index:02d}-{recipient.id}.eml"
            assert draft.addresses == recipient.addresses
            assert draft.sender == "office@example.org"
            assert draft.message_id == message["Message-ID"]
            assert draft.size == len(data)
            assert draft.sha256 == hashlib.sha256(data).hexdigest()
            assert len(draft.content_hash) == 64 and draft.content_hash != draft.sha256


def test_a_test_send_draft_goes_to_the_test_address_under_a_test_message_id(
    tmp_path: Path,
) -> None:
    source = load_campaign(Options(write_campaign(tmp_path, 3)))
    with MessageStore() as store:
        me = Mailbox("", "me@example.org")
        prepared = prepare(source, source.recipients[1:2], store, clock=lambda: NOW, test_to=me)
        (draft,) = prepared.drafts
        message = BytesParser(policy=policy.default).parsebytes(prepared.data(draft))
        assert draft.recipient_id == "r0001"
        assert draft.addresses == ("me@example.org",) == (message["To"].addresses[0].addr_spec,)
        assert draft.message_id == message["Message-ID"] == "<test.parallel-test.r0001@example.org>"


def test_each_test_run_gets_its_own_message_ids(tmp_path: Path) -> None:
    source = load_campaign(Options(write_campaign(tmp_path, 2)))
    me = Mailbox("", "me@example.org")
    with MessageStore() as store:
        first = prepare(source, source.recipients, store, test_to=me, test_run="run1").drafts
        second = prepare(source, source.recipients, store, test_to=me, test_run="run2").drafts
    assert [d.message_id for d in first] == [
        "<test.run1.parallel-test.r0000@example.org>",
        "<test.run1.parallel-test.r0001@example.org>",
    ]
    assert {d.message_id for d in first}.isdisjoint(d.message_id for d in second)


def test_two_processes_build_letters_with_attachments_as_one_process_does(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, 40)
    text = path.read_text("utf-8").replace(
        '  from: "Office <office@example.org>"\n',
        '  from: "Office <office@example.org>"\n  attachments: "letter.pdf"\n  language: "de"\n',
    )
    text = text.replace(
        '  - id: "r0037"\n', '  - id: "r0037"\n    attachments: ["annex/Karte.png"]\n'
    )
    path.write_text(text, "utf-8")
    (tmp_path / "letter.pdf").write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 40)
    (tmp_path / "annex").mkdir()
    (tmp_path / "annex" / "Karte.png").write_bytes(b"\x89PNG " + bytes(range(256)) * 3)
    source = load_campaign(Options(path))
    with MessageStore() as serial_store, MessageStore() as parallel_store:
        serial = prepare(source, source.recipients, serial_store, clock=lambda: NOW, workers=1)
        parallel = prepare(source, source.recipients, parallel_store, clock=lambda: NOW, workers=2)
        datas = [parallel.data(d) for d in parallel.drafts]
        assert datas == [serial.data(d) for d in serial.drafts]
    assert all(b"Content-Language: de\r\n" in data for data in datas)
    assert all(b'filename="letter.pdf"' in data for data in datas)
    assert [b'filename="Karte.png"' in data for data in datas].count(True) == 1
    assert b'filename="Karte.png"' in datas[37]
