"""`campaign send` of the bundled campaign against a real SMTP server on 127.0.0.1.

What the server received (envelopes, bytes), what the log and the sent folder hold, the exit
status and the printed message; the options that limit, rehearse or refuse a run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from campaign_factory import Run
from send_helpers import (
    ALL_ADDRESSES,
    BUNDLED,
    BUNDLED_IDS,
    CAMPAIGN_ID,
    FIXED_NOW,
    SENDER,
    by_recipient,
    copy_bundled,
    deliveries,
    events,
    files_in,
    log_path,
    network_watch,
    parse,
    plain_body,
    rcpt_commands,
    real_clock,
    run_cli,
    send,
    sha256,
    smtp_environ,
    states,
    status_of,
    write_small_campaign,
)
from smtp_server import FaultScript, SmtpServer

from campaign import pipeline
from campaign.archive import Archive
from campaign.sendlog import LogLock

MakeServer = Callable[..., SmtpServer]


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    return copy_bundled(tmp_path / "campaign")


SUBJECT = "Open letter from Members of the European Parliament on human rights in Kazakhstan"
NAMES = (
    "Nursultan Nazarbayev",
    "Zhakyp Assanov",
    "Karim Masimov",
    "Kalmukhanbet Kassymov",
    "Marat Beketayev",
    "Askar Shakirov",
)


def sent_folder(file: Path) -> Path:
    return file.parent / "outbox" / "sent"


# ---- the bundled campaign ---------------------------------------------------------------


def test_bundled_campaign_is_six_messages_to_exactly_the_seed_addresses(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    run = send(bundled, smtp_server)
    assert run.status == 0, run.stderr
    messages = smtp_server.messages
    assert len(messages) == 6
    envelopes = sorted(tuple(message.rcpt_tos) for message in messages)
    assert envelopes == sorted(addresses for addresses, _ in BUNDLED.values())
    assert sorted(deliveries(smtp_server).elements()) == sorted(ALL_ADDRESSES)
    assert smtp_server.rejected == []


def test_envelope_sender_is_the_from_address(bundled: Path, smtp_server: SmtpServer) -> None:
    assert send(bundled, smtp_server).status == 0
    for message in smtp_server.messages:
        assert message.mail_from == SENDER
        assert parse(message.data)["From"].addresses[0].addr_spec == SENDER


def test_each_body_is_personalised_for_its_recipient(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server).status == 0
    received = by_recipient(smtp_server)
    for rid, (addresses, salutation) in BUNDLED.items():
        [message] = received[rid]
        body = plain_body(message.data)
        assert salutation in body
        others = [s for other, (_, s) in BUNDLED.items() if other != rid]
        assert not [s for s in others if s in body]
        to = sorted(a.addr_spec for a in parse(message.data)["To"].addresses)
        assert to == sorted(addresses)


def test_log_records_attempt_and_result_per_address(bundled: Path, smtp_server: SmtpServer) -> None:
    assert send(bundled, smtp_server).status == 0
    for rid, (addresses, _) in BUNDLED.items():
        [attempt] = events(bundled, "attempt", rid)
        [result] = events(bundled, "result", rid)
        message_id = f"<{CAMPAIGN_ID}.{rid}@mep-letter.eu>"
        assert attempt["campaign"] == CAMPAIGN_ID
        assert attempt["attempt"] == 1
        assert attempt["message_id"] == message_id
        assert attempt["addresses"] == list(addresses)
        assert attempt["transport"] == f"smtp://127.0.0.1:{smtp_server.port}"
        assert result["message_id"] == message_id
        assert result["attempt"] == 1
        assert result["replies"] == {
            address: {"outcome": "accepted", "code": 250, "reply": "OK"} for address in addresses
        }
        assert result["status"] == "sent"
        assert result["time"] >= attempt["time"]
    [message] = [m for m in smtp_server.messages if m.rcpt_tos == ["aprk@akorda.kz"]]
    assert parse(message.data)["Message-ID"] == f"<{CAMPAIGN_ID}.president@mep-letter.eu>"


def test_sent_folder_keeps_the_exact_bytes_the_server_received(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server).status == 0
    received = by_recipient(smtp_server)
    archived = files_in(sent_folder(bundled))
    assert len(archived) == 6
    for n, rid in enumerate(BUNDLED_IDS, 1):
        [message] = received[rid]
        digest = sha256(message.data)
        name = f"{n:02d}-{rid}.{digest[:16]}.eml"
        data = archived[name]
        assert data == message.data
        [result] = events(bundled, "result", rid)
        [attempt] = events(bundled, "attempt", rid)
        assert result["sha256"] == digest == attempt["sha256"]
        assert result["archive"] == f"sent/{name}"
        assert attempt["size"] == len(data)


def test_second_send_sends_nothing_and_exits_0(bundled: Path, smtp_server: SmtpServer) -> None:
    assert send(bundled, smtp_server).status == 0
    sessions = smtp_server.sessions
    again = send(bundled, smtp_server)
    assert again.status == 0, again.stderr
    assert "Nothing to send" in again.out
    assert "6 sent" in again.out
    assert len(smtp_server.messages) == 6
    assert smtp_server.sessions == sessions
    assert all(status_of(bundled, rid) == "sent" for rid in BUNDLED_IDS)


def test_log_starts_and_ends_each_run(bundled: Path, smtp_server: SmtpServer) -> None:
    assert send(bundled, smtp_server).status == 0
    [start] = events(bundled, "run-start")
    [end] = events(bundled, "run-end")
    assert start["planned"] == 6 and start["test"] is False and start["pid"] == os.getpid()
    assert end["run"] == start["run"]
    assert end["counts"] == {"sent": 6}
    assert end["stopped"] is None


# ---- throughput: connections and rate -----------------------------------------------------


def test_each_connection_is_reused_for_many_messages(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    run = send(bundled, smtp_server, "--concurrency", "2")
    assert run.status == 0, run.stderr
    assert smtp_server.sessions == 1 + 2  # the check before the question, then the run
    assert len({message.session_id for message in smtp_server.messages}) == 2
    assert "(2 connections)" in run.out


def test_rate_spaces_the_message_starts(bundled: Path, smtp_server: SmtpServer) -> None:
    run = send(bundled, smtp_server, "--rate", "600", clock=real_clock)  # one every 0.1 s
    assert run.status == 0, run.stderr
    starts = sorted(datetime.fromisoformat(a["time"]) for a in events(bundled, "attempt"))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 5
    assert min(gaps) >= 0.09, gaps


def test_a_log_given_with_log_keeps_the_sent_folder_beside_it(
    bundled: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    custom = tmp_path / "records" / "kz.jsonl"
    run = send(bundled, smtp_server, "--log", custom)
    assert run.status == 0, run.stderr
    assert custom.is_file() and not log_path(bundled).exists()
    assert len(files_in(tmp_path / "records" / "sent")) == 6
    again = send(bundled, smtp_server, "--log", custom)
    assert again.status == 0 and len(smtp_server.messages) == 6


def test_a_terminal_run_asks_then_sends(bundled: Path, smtp_server: SmtpServer) -> None:
    run = run_cli(
        bundled, "send", environ=smtp_environ(smtp_server), terminal=True, prompt=lambda _: "yes"
    )
    assert run.status == 0, run.stderr
    assert len(run.prompts) == 1
    assert len(smtp_server.messages) == 6


# ---- rehearsing and limiting a run ------------------------------------------------------


def test_dry_run_prints_the_plan_and_connects_to_nothing(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    before = files_in(bundled.parent)
    run = send(bundled, smtp_server, "--dry-run")
    assert run.status == 0, run.stderr
    assert "6 letters to 8 addresses" in run.out
    assert f"smtp://127.0.0.1:{smtp_server.port} (none, no login)" in run.out
    assert SENDER in run.out
    assert "Dry run: nothing was sent and nothing was written." in run.out
    assert smtp_server.sessions == 0
    assert files_in(bundled.parent) == before
    assert not log_path(bundled).exists()
    assert not (bundled.parent / "outbox").exists()


def test_dry_run_after_a_partial_send_shows_what_is_skipped(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server, "--only", "president").status == 0
    log_before = log_path(bundled).read_bytes()
    run = send(bundled, smtp_server, "--dry-run")
    assert run.status == 0, run.stderr
    assert "5 letters to 7 addresses" in run.out
    assert "1 sent" in run.out
    assert smtp_server.sessions == 2  # the first send's check and run; none for the dry run
    assert log_path(bundled).read_bytes() == log_before


def test_only_sends_to_the_named_recipients_alone(bundled: Path, smtp_server: SmtpServer) -> None:
    run = send(bundled, smtp_server, "--only", "president", "ombudsman")
    assert run.status == 0, run.stderr
    assert sorted(by_recipient(smtp_server)) == ["ombudsman", "president"]
    assert sorted(deliveries(smtp_server)) == sorted(
        ["aprk@akorda.kz", "info@ombudsman.kz", "mbudsman@ombudsman.kz"]
    )
    assert status_of(bundled, "president") == "sent"
    assert status_of(bundled, "general-prosecutor") == "pending"


def test_after_only_a_full_send_sends_the_rest_once(bundled: Path, smtp_server: SmtpServer) -> None:
    assert send(bundled, smtp_server, "--only", "president", "ombudsman").status == 0
    run = send(bundled, smtp_server)
    assert run.status == 0, run.stderr
    assert sorted(deliveries(smtp_server).elements()) == sorted(ALL_ADDRESSES)


def test_only_with_an_unknown_id_is_refused(bundled: Path, smtp_server: SmtpServer) -> None:
    run = send(bundled, smtp_server, "--only", "president", "no-such-official")
    assert run.status == 2
    assert "no-such-official" in run.err
    assert smtp_server.sessions == 0
    assert not log_path(bundled).exists()


def test_test_to_sends_every_letter_to_that_address_alone(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    run = send(bundled, smtp_server, "--test-to", "tester@example.net")
    assert run.status == 0, run.stderr
    assert "Test send to tester@example.net: 6 sent" in run.out
    assert "no recipient counts as sent for it" in " ".join(run.out.split())
    messages = smtp_server.messages
    assert len(messages) == 6
    assert all(message.rcpt_tos == ["tester@example.net"] for message in messages)
    subjects = sorted(str(parse(message.data)["Subject"]) for message in messages)
    assert subjects == sorted(f"[TEST for {name}] {SUBJECT}" for name in NAMES)
    for message in messages:
        assert [a.addr_spec for a in parse(message.data)["To"].addresses] == ["tester@example.net"]


def test_test_send_records_nothing_as_sent(bundled: Path, smtp_server: SmtpServer) -> None:
    assert send(bundled, smtp_server, "--test-to", "tester@example.net").status == 0
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)
    assert all(record.get("test") for record in events(bundled, "attempt"))
    assert not sent_folder(bundled).exists()
    real = send(bundled, smtp_server)
    assert real.status == 0, real.stderr
    assert sorted(deliveries(smtp_server).elements()) == sorted(
        [*ALL_ADDRESSES, *["tester@example.net"] * 6]
    )


# ---- sending the reviewed drafts ----------------------------------------------------------


def write_drafts(file: Path) -> Path:
    run = run_cli(file, "drafts", clock=FIXED_NOW)
    assert run.status == 0, run.stderr
    return file.parent / "outbox"


def test_from_outbox_sends_the_drafts_byte_for_byte(bundled: Path, smtp_server: SmtpServer) -> None:
    outbox = write_drafts(bundled)
    drafts = {name: data for name, data in files_in(outbox).items() if name.endswith(".eml")}
    run = send(bundled, smtp_server, "--from-outbox")
    assert run.status == 0, run.stderr
    received = by_recipient(smtp_server)
    for n, rid in enumerate(BUNDLED_IDS, 1):
        [message] = received[rid]
        assert message.data == drafts[f"{n:02d}-{rid}.eml"]
        assert message.rcpt_tos == list(BUNDLED[rid][0])
    assert b"Tue, 02 Jan 2024 03:04:05" in received["president"][0].data


def test_from_outbox_warns_of_an_eml_file_that_is_no_recipients_draft(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    extra = (outbox / "01-president.eml").read_bytes()
    (outbox / "07-extra-minister.eml").write_bytes(extra)
    run = send(bundled, smtp_server, "--from-outbox")
    assert run.status == 0, run.stderr
    assert (
        f"warning: 1 .eml file in {outbox} that no recipient of the campaign file has will not"
        " be sent: 07-extra-minister.eml"
    ) in run.err
    assert len(smtp_server.messages) == 6


def test_from_outbox_with_only_the_drafts_gives_no_warning(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    write_drafts(bundled)
    run = send(bundled, smtp_server, "--from-outbox")
    assert run.status == 0, run.stderr
    assert "warning" not in run.err


def test_a_draft_saved_without_its_last_line_end_is_sent_and_recorded_sent(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    draft = write_drafts(bundled) / "01-president.eml"
    data = draft.read_bytes()
    draft.write_bytes(data.removesuffix(b"\r\n"))  # as many editors save it
    run = send(bundled, smtp_server, "--from-outbox", "--only", "president", "--timeout", "5")
    assert run.status == 0, run.stderr
    [message] = smtp_server.received_by("aprk@akorda.kz")
    assert message.data == data
    assert status_of(bundled, "president") == "sent"
    [result] = events(bundled, "result", "president")
    assert result["sha256"] == sha256(data)


def test_the_send_summary_shows_each_sent_recipients_queue_reply(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server(faults=FaultScript(data=(250, "2.0.0 Ok: queued as Q7X")))
    run = send(bundled, server)
    assert run.status == 0, run.stderr
    summary = run.out.partition("send summary")[2]
    for rid, (addresses, _) in BUNDLED.items():
        assert rid in summary
        for address in addresses:
            assert f"{address}: 250 2.0.0 Ok: queued as Q7X" in summary


def _edit_headers(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    head, sep, body = data.partition(b"\r\n\r\n")
    assert old in head
    path.write_bytes(head.replace(old, new, 1) + sep + body)


def test_from_outbox_refuses_a_draft_with_an_added_bcc(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    _edit_headers(
        outbox / "03-national-security-committee.eml",
        b"\r\nSubject:",
        b"\r\nBcc: someone@example.net\r\nSubject:",
    )
    run = send(bundled, smtp_server, "--from-outbox")
    assert run.status == 2
    assert "national-security-committee" in run.err
    assert "Bcc" in run.err
    assert "nothing was written or sent" in run.err
    assert smtp_server.sessions == 0
    assert not log_path(bundled).exists()


def test_from_outbox_refuses_a_draft_whose_to_was_changed(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    _edit_headers(outbox / "01-president.eml", b"aprk@akorda.kz", b"someone@example.net")
    run = send(bundled, smtp_server, "--from-outbox")
    assert run.status == 2
    assert "president" in run.err
    assert "someone@example.net" in run.err
    assert smtp_server.sessions == 0
    assert smtp_server.messages == []


def test_from_outbox_without_drafts_is_refused(bundled: Path, smtp_server: SmtpServer) -> None:
    run = send(bundled, smtp_server, "--from-outbox")
    assert run.status == 2
    assert "no draft for this recipient" in run.err
    assert "campaign drafts" in run.err
    assert smtp_server.sessions == 0


# ---- confirmation and the lock ----------------------------------------------------------


def test_without_a_terminal_and_without_yes_nothing_is_sent(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    run = run_cli(bundled, "send", environ=smtp_environ(smtp_server), terminal=False)
    assert run.status == 2
    assert "no terminal to confirm on, so nothing was sent" in run.err
    assert "--yes" in run.err
    assert smtp_server.sessions == 0
    assert not log_path(bundled).exists()


def test_confirmation_answered_no_sends_nothing(bundled: Path, smtp_server: SmtpServer) -> None:
    run = run_cli(bundled, "send", environ=smtp_environ(smtp_server), prompt=lambda _: "n")
    assert run.status == 1
    assert "Not confirmed: nothing was sent." in run.out
    assert "error" not in run.err
    [question] = run.prompts
    assert "6 letters to 8 addresses" in question
    assert f"smtp://127.0.0.1:{smtp_server.port}" in question
    assert SENDER in question
    assert smtp_server.messages == []
    assert not any(line.startswith("MAIL") for _, line in smtp_server.commands)
    assert not log_path(bundled).exists()


def test_confirmation_answered_yes_sends(bundled: Path, smtp_server: SmtpServer) -> None:
    run = run_cli(bundled, "send", environ=smtp_environ(smtp_server), prompt=lambda _: "y")
    assert run.status == 0, run.stderr
    assert len(run.prompts) == 1
    assert len(smtp_server.messages) == 6


def test_a_held_lock_refuses_the_run_naming_the_holder(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    lock = LogLock(log_path(bundled))
    lock.acquire("test holding the log")
    try:
        run = send(bundled, smtp_server)
    finally:
        lock.release()
    assert run.status == 2
    assert "another run holds the log" in run.err
    assert f"pid {os.getpid()}" in run.err
    assert "test holding the log" in run.err
    assert smtp_server.sessions == 0
    assert not log_path(bundled).exists()


# ---- a letter that changed after part of the campaign went out ----------------------------


def _change_the_letter(file: Path) -> None:
    template = file.parent / "templates" / "letter.txt.j2"
    template.write_text(template.read_text(encoding="utf-8") + "\nP.S. A late addition.\n")


def test_changed_letter_after_a_partial_send_is_refused_naming_recipients(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server, "--only", "president").status == 0
    _change_the_letter(bundled)
    sessions = smtp_server.sessions
    log_before = log_path(bundled).read_bytes()
    run = send(bundled, smtp_server)
    assert run.status == 2
    assert "the letter changed since part of the campaign was sent" in run.err
    assert "president" in run.err
    assert "--allow-changes" in run.err
    assert smtp_server.sessions == sessions
    assert len(smtp_server.messages) == 1
    assert log_path(bundled).read_bytes() == log_before


def test_allow_changes_sends_the_rest_after_a_change(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server, "--only", "president").status == 0
    _change_the_letter(bundled)
    run = send(bundled, smtp_server, "--allow-changes")
    assert run.status == 0, run.stderr
    assert sorted(deliveries(smtp_server).elements()) == sorted(ALL_ADDRESSES)
    received = by_recipient(smtp_server)
    assert "P.S. A late addition." not in plain_body(received["president"][0].data)
    assert "P.S. A late addition." in plain_body(received["ombudsman"][0].data)


def test_changed_letter_is_refused_for_a_recipient_sent_alone_with_only(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server, "--only", "president").status == 0
    _change_the_letter(bundled)
    run = send(bundled, smtp_server, "--only", "ombudsman")
    assert run.status == 2
    assert "the letter changed since part of the campaign was sent" in run.err
    assert len(smtp_server.messages) == 1


def test_changed_letter_before_anything_was_sent_is_not_refused(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server, "--test-to", "tester@example.net").status == 0
    _change_the_letter(bundled)
    run = send(bundled, smtp_server)
    assert run.status == 0, run.stderr
    assert len(states(bundled).recipients) == 6


# ---- usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--concurrency", "0"), "--concurrency: must be greater than 0"),
        (("--retries", "-1"), "--retries: must be at least 0"),
        (("--timeout", "0"), "--timeout: must be greater than 0"),
        (("--only",), "--only: expected at least one argument"),
        (("--security", "plaintext"), "--security: invalid choice"),
        (("--test-to", "not an address"), "--test-to 'not an address' is not a valid address"),
        (
            ("--test-to", "tester@example.net", "--from-outbox"),
            "--test-to and --from-outbox cannot be combined",
        ),
    ],
    ids=[
        "concurrency-0",
        "retries-negative",
        "timeout-0",
        "only-empty",
        "security",
        "test-to",
        "test-to-and-outbox",
    ],
)
def test_bad_usage_exits_2_and_sends_nothing(
    bundled: Path,
    smtp_server: SmtpServer,
    argv: tuple[str, ...],
    message: str,
) -> None:
    run = send(bundled, smtp_server, *argv)
    printed = run.err
    assert run.status == 2
    assert message in printed
    assert "Traceback" not in printed
    assert smtp_server.sessions == 0
    assert not log_path(bundled).exists()


def test_no_smtp_host_is_refused_without_any_default(tmp_path: Path) -> None:
    # A campaign of its own (example.net addresses), so that even a regression that fell
    # back to some default server could not reach the seed's real officials.
    file = write_small_campaign(tmp_path, count=2)
    with network_watch() as seen:
        run = run_cli(file, "send", "--yes", environ={})
    assert run.status == 2
    assert "no SMTP server is set" in run.err
    assert "CAMPAIGN_SMTP_HOST" in run.err
    assert seen == []
    assert not log_path(file).exists()


def test_a_lagging_archive_holds_the_sending_back_instead_of_filling_the_memory(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters accepted but not yet archived keep their bytes in memory: on a disk slower
    than the server (one without syncfs fsyncs every file) they are bounded."""
    file = write_small_campaign(tmp_path / "c", 6)
    disk = threading.Event()

    class SlowDisk(Archive):
        def _write_batch(self, batch: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
            disk.wait(timeout=30)
            super()._write_batch(batch)

    monkeypatch.setattr(pipeline, "Archive", SlowDisk)
    monkeypatch.setattr(pipeline, "MAX_UNARCHIVED_BYTES", 1)  # one letter waiting at most
    runs: list[Run] = []
    sender = threading.Thread(
        target=lambda: runs.append(send(file, smtp_server, "--concurrency", "1"))
    )
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while not smtp_server.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # time enough for the other five, were nothing holding them back
        assert len(smtp_server.messages) == 1
    finally:
        disk.set()
        sender.join(timeout=30)
    assert runs and runs[0].status == 0, runs
    assert sorted(deliveries(smtp_server)) == [f"r{n:03d}@example.net" for n in range(1, 7)]
    assert len(files_in(sent_folder(file))) == 6
    assert [r["status"] for r in events(file, "result")] == ["sent"] * 6


def test_an_archive_that_fails_part_way_stops_the_run_without_hanging(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters queued while a failing write was under way must not wait for ever."""
    file = write_small_campaign(tmp_path / "c", 20)
    batches = itertools.count(1)

    class FullDisk(Archive):
        def _write_batch(self, batch: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
            if next(batches) >= 2:
                time.sleep(0.3)  # others queue up meanwhile
                raise OSError(28, "No space left on device")
            super()._write_batch(batch)

    monkeypatch.setattr(pipeline, "Archive", FullDisk)
    runs: list[Run] = []
    sender = threading.Thread(
        target=lambda: runs.append(send(file, smtp_server, "--concurrency", "4")), daemon=True
    )
    sender.start()
    sender.join(timeout=30)
    assert not sender.is_alive(), "the run hung"
    assert runs[0].status == 1
    assert "the sent archive could not keep a letter" in runs[0].err
    assert "No space left on device" in runs[0].err
    # Every letter the server took has its result; only those kept name an archive file.
    results = events(file, "result")
    assert len(results) == len(smtp_server.messages)
    kept = files_in(sent_folder(file))
    assert 0 < len(kept) < len(results)
    assert {r["archive"] for r in results if r.get("archive")} == {f"sent/{n}" for n in kept}


def parse_json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _rename(file: Path, old: str, new: str) -> None:
    text = file.read_text(encoding="utf-8")
    assert f'id: "{old}"' in text
    file.write_text(text.replace(f'id: "{old}"', f'id: "{new}"'), encoding="utf-8")


def test_a_send_log_moved_away_does_not_send_the_archived_letters_again(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 3)
    assert send(file, smtp_server).status == 0
    log_path(file).rename(tmp_path / "moved-log.jsonl")
    # A test send records tests, not letters: it must not open the way either.
    assert send(file, smtp_server, "--test-to", "tester@example.net", "--only", "r001").status == 0
    for argv in (("--dry-run",), ()):
        run = send(file, smtp_server, *argv)
        assert run.status == 2, run.err
        assert "Traceback" not in run.err
        said = " ".join(run.err.split())
        assert "holds letters this campaign already sent (01-r001." in said
        assert "but the send log" in said and "records none" in said
        assert "put the send log back" in said
    assert len(smtp_server.messages) == 4  # three letters and the test
    log_path(file).unlink()  # the test send's log
    (tmp_path / "moved-log.jsonl").rename(log_path(file))
    again = send(file, smtp_server)
    assert again.status == 0, again.err
    assert "Nothing to send" in again.out
    assert len(smtp_server.messages) == 4


def test_another_campaigns_letters_beside_a_new_log_do_not_stop_a_send(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    first = write_small_campaign(tmp_path / "c", 2)
    assert send(first, smtp_server).status == 0
    text = first.read_text(encoding="utf-8").replace('id: "crash-test"', 'id: "second-letter"')
    first.write_text(text, encoding="utf-8")
    second_log = log_path(first).parent / "second.jsonl"
    run = send(first, smtp_server, "--log", second_log)
    assert run.status == 0, run.err
    assert len(smtp_server.messages) == 4


def test_after_an_edited_draft_went_out_a_send_with_nothing_left_says_so(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    draft = write_drafts(bundled) / "01-president.eml"
    head, sep, body = draft.read_bytes().partition(b"\r\n\r\n")
    assert b"Brussels, " in body
    draft.write_bytes(head + sep + body.replace(b"Brussels, ", b"Brussels (edited), ", 1))
    assert send(bundled, smtp_server, "--from-outbox").status == 0
    for argv in (("--dry-run",), ()):
        run = send(bundled, smtp_server, *argv)
        assert run.status == 0, run.err
        assert "the letter changed" not in run.err
    assert "Nothing to send" in run.out
    assert len(smtp_server.messages) == len(BUNDLED_IDS)


def test_an_address_written_in_another_case_after_the_send_is_not_sent_again(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server).status == 0
    text = bundled.read_text(encoding="utf-8")
    bundled.write_text(text.replace('"aprk@akorda.kz"', '"Aprk@Akorda.kz"'), encoding="utf-8")
    review = run_cli(bundled, "log", "--json")
    assert review.status == 0, review.err
    assert all(row["status"] == "sent" for row in parse_json_lines(review.stdout))
    for argv in ((), ("--allow-changes",)):
        run = send(bundled, smtp_server, *argv)
        assert run.status == 0, run.err
        assert "Nothing to send" in run.out
    assert deliveries(smtp_server)["aprk@akorda.kz"] == 1
    assert "Aprk@Akorda.kz" not in deliveries(smtp_server)


def test_a_renamed_recipient_is_not_sent_the_letter_again(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 3)
    assert send(file, smtp_server).status == 0
    _rename(file, "r002", "r002-minister")
    log_before = log_path(file).read_bytes()
    for argv in (("--dry-run",), ()):
        run = send(file, smtp_server, *argv)
        assert run.status == 2, run.err
        assert "Traceback" not in run.err
        assert (
            "1 address(es) were already sent this campaign's letter under another recipient id"
            in run.err
        )
        assert "r002@example.net (now 'r002-minister', sent as 'r002')" in run.err
    assert deliveries(smtp_server) == {f"r00{n}@example.net": 1 for n in (1, 2, 3)}
    assert log_path(file).read_bytes() == log_before


def test_the_log_review_says_a_renamed_recipient_is_held_back_not_that_send_will_send_it(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 3)
    assert send(file, smtp_server).status == 0
    _rename(file, "r002", "r002-minister")
    file.write_text(
        file.read_text(encoding="utf-8").replace("r003@example.net", "r003-new@example.net"),
        encoding="utf-8",
    )
    _rename(file, "r003", "r003-new")  # a new recipient with a new address: sent as usual
    review = run_cli(file, "log")
    assert review.status == 0, review.err
    steps = " ".join(review.out.split())
    assert (
        "1 held back: an address of theirs was already sent this campaign's letter under"
        " another recipient id (renamed?): r002-minister; `campaign send` refuses to run"
    ) in steps
    assert "1 pending: `campaign send` will send them (those held back aside, with --only)" in steps
    refused = send(file, smtp_server)
    assert refused.status == 2
    assert "(now 'r002-minister', sent as 'r002')" in refused.err
    meanwhile = send(file, smtp_server, "--only", "r003-new")
    assert meanwhile.status == 0, meanwhile.err
    assert deliveries(smtp_server)["r003-new@example.net"] == 1


def test_an_address_moved_to_a_recipient_with_a_history_is_held_back_in_the_log_too(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server(faults=FaultScript(rcpt={"r002b@example.net": (451, "4.7.1 Later")}))
    file = write_small_campaign(tmp_path / "c", 2)
    text = file.read_text(encoding="utf-8")
    file.write_text(
        text.replace('["r002@example.net"]', '["r002@example.net", "r002b@example.net"]')
    )
    assert send(file, server, "--retries", "0").status == 1  # r002b deferred
    # r001's address moves to r002, whose own letter is part sent, part deferred.
    text = file.read_text(encoding="utf-8")
    text = text.replace('"r002b@example.net"]', '"r002b@example.net", "r001@example.net"]')
    file.write_text(
        text.replace('id: "r001"', 'id: "r001-gone"').replace(
            '["r001@example.net"]', '["r001-gone@example.net"]'
        )
    )
    review = run_cli(file, "log")
    steps = " ".join(review.out.split())
    assert "1 held back:" in steps and "(renamed?): r002;" in steps
    assert "deferred: run `campaign send` again" not in steps
    refused = send(file, server)
    assert refused.status == 2
    assert "r001@example.net (now 'r002', sent as 'r001')" in refused.err


def test_a_renamed_recipient_with_the_address_in_another_case_is_not_sent_it_again(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 2)
    text = file.read_text(encoding="utf-8").replace("r002@example.net", "R002@Example.net")
    file.write_text(text, encoding="utf-8")
    assert send(file, smtp_server).status == 0
    text = text.replace("R002@Example.net", "r002@example.net")
    file.write_text(text.replace('id: "r002"', 'id: "r002-new"'), encoding="utf-8")
    run = send(file, smtp_server)
    assert run.status == 2, run.err
    assert "(now 'r002-new', sent as 'r002')" in run.err
    assert len(smtp_server.messages) == 2


def test_a_renamed_recipient_is_sent_again_with_allow_changes(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 2)
    assert send(file, smtp_server).status == 0
    _rename(file, "r001", "r001-again")
    run = send(file, smtp_server, "--allow-changes")
    assert run.status == 0, run.err
    assert deliveries(smtp_server)["r001@example.net"] == 2
    assert [r["status"] for r in events(file, "result", "r001-again")] == ["sent"]


def test_an_address_refused_under_its_old_id_may_be_sent_under_a_new_one(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server(faults=FaultScript(rcpt={"r001@example.net": (550, "5.1.1 No")}))
    file = write_small_campaign(tmp_path / "c", 2)
    assert send(file, server).status == 1
    _rename(file, "r001", "r001-new")
    run = send(file, server)
    assert run.status == 1, run.err  # refused again by the server, but tried: not a duplicate
    assert "under another recipient id" not in run.err
    assert rcpt_commands(server, "r001@example.net") == 2
