"""What is read back is input: the log, the archive, drafts, the outbox and server replies.

Each test replays one way a file on disk or a server could make campaign send something it
should not, write through a link, delete a file it did not write, crash, or put raw control
characters on a terminal; against real files and a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from send_helpers import (
    BUNDLED_IDS,
    FIXED_NOW,
    copy_bundled,
    events,
    files_in,
    log_path,
    plain_body,
    run_cli,
    send,
    sha256,
    smtp_environ,
    status_of,
    write_small_campaign,
)
from smtp_server import FaultScript, SmtpServer

MakeServer = Callable[..., SmtpServer]
FAST = ("--backoff", "0", "--timeout", "2")
ESC = "\x1b"


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    return copy_bundled(tmp_path / "campaign")


def write_drafts(file: Path) -> Path:
    run = run_cli(file, "drafts", clock=FIXED_NOW)
    assert run.status == 0, run.stderr
    return file.parent / "outbox"


def edit_head(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    head, sep, body = data.partition(b"\r\n\r\n")
    assert old in head
    path.write_bytes(head.replace(old, new, 1) + sep + body)


def assert_refused_cleanly(run: object, server: SmtpServer) -> None:
    assert run.status == 2, (run.stdout, run.stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in run.stderr  # type: ignore[attr-defined]
    assert server.messages == [] and server.sessions == 0


# ---- 1. the log is a record, not a command ----------------------------------------------


def partial_general_prosecutor(bundled: Path, make_smtp_server: MakeServer) -> None:
    """general-prosecutor accepted at one address, the other one still to send."""
    greylist = make_smtp_server(
        faults=FaultScript(rcpt={"procuror@nursat.kz": (451, "4.7.1 Later")})
    )
    assert send(bundled, greylist, "--retries", "0", *FAST).status == 1
    assert status_of(bundled, "general-prosecutor") == "deferred"


def test_a_forged_archive_path_in_the_log_never_decides_what_is_sent(
    bundled: Path, make_smtp_server: MakeServer, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"Subject: private\r\n\r\nnot for anyone\r\n")
    partial_general_prosecutor(bundled, make_smtp_server)
    [result] = events(bundled, "result", "general-prosecutor")
    result["archive"] = "../../secret.txt"
    with log_path(bundled).open("a", encoding="utf-8") as log:
        log.write(json.dumps(result) + "\n")
    server = make_smtp_server()
    run = send(bundled, server, "--only", "general-prosecutor", *FAST)
    assert run.status == 0, run.stderr
    [message] = server.received_by("procuror@nursat.kz")
    assert b"not for anyone" not in message.data
    assert b"Dear Mr Assanov," in message.data.replace(b"=\r\n", b"")


def test_an_archive_emptied_by_a_crash_is_not_resent_the_letter_is_rebuilt(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    partial_general_prosecutor(bundled, make_smtp_server)
    [result] = events(bundled, "result", "general-prosecutor")
    (bundled.parent / "outbox" / result["archive"]).write_bytes(b"")
    server = make_smtp_server()
    run = send(bundled, server, "--only", "general-prosecutor", *FAST)
    assert run.status == 0, run.stderr
    [message] = server.received_by("procuror@nursat.kz")
    assert len(message.data) > 1000
    [*_, last] = events(bundled, "result", "general-prosecutor")
    assert last["sha256"] == sha256(message.data)
    # The emptied file is replaced: the bytes the log names are on disk again.
    kept = (bundled.parent / "outbox" / last["archive"]).read_bytes()
    assert sha256(kept) == last["sha256"]


def test_a_partial_resumed_sends_the_same_bytes_the_first_address_got(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    greylist = make_smtp_server(
        faults=FaultScript(rcpt={"procuror@nursat.kz": (451, "4.7.1 Later")})
    )
    assert send(bundled, greylist, "--retries", "0", *FAST).status == 1
    [first] = greylist.received_by("Gp-rk@prokuror.kz")
    server = make_smtp_server()
    later = FIXED_NOW.replace(year=2025)
    assert send(bundled, server, "--only", "general-prosecutor", *FAST, clock=later).status == 0
    [second] = server.received_by("procuror@nursat.kz")
    assert second.data == first.data  # the same letter, Date included


@pytest.mark.parametrize(
    "forged",
    [
        {"replies": ["x"]},
        {"replies": {"a@example.org": "accepted"}},
        {"attempt": "x"},
        {"addresses": 5},
        {"attempt": 1e400},
        {"time": 5},
        {"status": "sent", "archive": 7},
        {"event": ["x"]},
        {"status": [1]},
        {"replies": {"a@example.org": {"outcome": ["x"]}}},
        {"message_id": "\ud800"},
    ],
    ids=[
        "replies-list",
        "reply-string",
        "attempt-text",
        "addresses-number",
        "huge",
        "time",
        "x",
        "event-list",
        "status-list",
        "outcome-list",
        "lone-surrogate",
    ],
)
def test_a_malformed_log_record_is_named_by_file_and_line_never_a_traceback(
    bundled: Path, smtp_server: SmtpServer, forged: dict[str, object]
) -> None:
    assert send(bundled, smtp_server).status == 0
    records = events(bundled, "attempt") + events(bundled, "result")
    record = {**records[-1], **forged}
    with log_path(bundled).open("a", encoding="utf-8") as log:
        log.write(json.dumps(record).replace("Infinity", "1e400") + "\n")
        log.write(json.dumps(records[0]) + "\n")  # not the last line: not a torn tail
    line = len(log_path(bundled).read_text("utf-8").splitlines()) - 1
    for argv in (("send", "--dry-run"), ("log",), ("log", "--json"), ("log", "--csv")):
        run = run_cli(bundled, *argv, environ=smtp_environ(smtp_server))
        assert run.status == 2, (argv, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr
        assert f"send-log.jsonl:{line}:" in run.err, run.err
        assert f"line {line} is not a record campaign wrote" in run.err


class _NotUtf8Server:
    """A bare SMTP server on 127.0.0.1 whose replies carry bytes that are not UTF-8."""

    def __init__(self, *, at: bytes) -> None:
        self.at = at  # b"RCPT" or b"DATA": where the odd reply comes
        self.received = 0
        self.port = 0

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 odd.example ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    self.received += 1
                    odd = self.at == b"DATA"
                    writer.write(b"250 2.0.0 queued \xff\xfe as Q1\r\n" if odd else b"250 ok\r\n")
                continue
            command = line[:4].upper()
            if command == b"EHLO":
                writer.write(b"250-odd.example\r\n250 8BITMIME\r\n")
            elif command == b"RCPT" and self.at == b"RCPT":
                writer.write(b"550 5.1.1 no \xff\xfe such user\r\n")
            elif command == b"DATA":
                writer.write(b"354 go on\r\n")
                in_data = True
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    def __enter__(self) -> int:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def start() -> None:
            self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()

        self._thread = threading.Thread(
            target=lambda: (self._loop.run_until_complete(start()), self._loop.run_forever()),
            daemon=True,
        )
        self._thread.start()
        assert ready.wait(10)
        return self.port

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.mark.parametrize(
    ("at", "status", "outcome"), [(b"DATA", 0, "sent"), (b"RCPT", 1, "failed")]
)
def test_a_reply_that_is_not_utf8_is_recorded_and_shown_escaped(
    bundled: Path, at: bytes, status: int, outcome: str
) -> None:
    server = _NotUtf8Server(at=at)
    with server as port:
        environ = {
            "CAMPAIGN_SMTP_HOST": "127.0.0.1",
            "CAMPAIGN_SMTP_PORT": str(port),
            "CAMPAIGN_SMTP_SECURITY": "none",
        }
        run = run_cli(bundled, "send", "--yes", "--only", "president", *FAST, environ=environ)
    assert run.status == status, run.stderr
    assert "Traceback" not in run.stderr
    assert "\\udcff\\udcfe" in run.stdout  # the odd bytes, written out
    assert server.received == (1 if outcome == "sent" else 0)
    [result] = events(bundled, "result")
    assert result["status"] == outcome
    log_path(bundled).read_bytes().decode("utf-8")  # the log stays UTF-8
    for argv in (("log",), ("log", "--csv"), ("log", "--json")):
        shown = run_cli(bundled, *argv)
        assert shown.status == 0 and "\\udcff" in shown.stdout, argv


def append_after_a_send(bundled: Path, server: SmtpServer, line: str) -> None:
    """Send the campaign, then put `line` in its log, followed by a good record (so the
    line is not a torn last one)."""
    assert send(bundled, server).status == 0
    first = events(bundled, "attempt")[0]
    with log_path(bundled).open("a", encoding="utf-8") as log:
        log.write(line + "\n")
        log.write(json.dumps(first) + "\n")


def test_deep_nesting_around_a_lone_surrogate_is_refused_not_a_traceback(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    nested = "[" * 400 + '"\\ud800"' + "]" * 400
    append_after_a_send(bundled, smtp_server, '{"event":"attempt","x":' + nested + "}")
    run = run_cli(bundled, "log")
    assert run.status == 2 and "Traceback" not in run.stderr
    assert "is not a record campaign wrote" in run.err


def test_deeply_nested_json_in_the_log_is_refused_with_its_line(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    append_after_a_send(bundled, smtp_server, '{"event":"result","x":' + nested + "}")
    run = run_cli(bundled, "log")
    assert run.status == 2 and "Traceback" not in run.stderr
    assert "is not a" in run.err


# ---- 2. a draft is checked as a whole --------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (b"From: ", b"FROM: President <president@gov.example>\r\nFrom: ", "FROM"),
        (b"To: ", b"tO: someone@example.net\r\nTo: ", "tO"),
        (b"Message-ID: ", b"MESSAGE-ID: <x@example.net>\r\nMessage-ID: ", "MESSAGE-ID"),
        (b"Subject: ", b"Sender: someone@example.net\r\nSubject: ", "Sender"),
        (b"Subject: ", b"Resent-From: someone@example.net\r\nSubject: ", "Resent-From"),
        (b"Subject: ", b"Resent-Cc: someone@example.net\r\nSubject: ", "Resent-Cc"),
        (b"Subject: ", b"Apparently-To: someone@example.net\r\nSubject: ", "Apparently-To"),
        (
            b"Subject: ",
            b"Disposition-Notification-To: someone@example.net\r\nSubject: ",
            "Disposition-Notification-To",
        ),
        (b"Subject: ", b"Reply-To: someone@example.net\r\nSubject: ", "Reply-To"),
        (b"Subject: ", b"Return-Path: <someone@example.net>\r\nSubject: ", "Return-Path"),
    ],
)
def test_a_draft_with_a_header_campaign_does_not_write_is_refused(
    bundled: Path, smtp_server: SmtpServer, old: bytes, new: bytes, named: str
) -> None:
    outbox = write_drafts(bundled)
    edit_head(outbox / "01-president.eml", old, new)
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    assert "president" in run.err and named in run.err
    assert not log_path(bundled).exists()


def test_a_draft_whose_sender_was_changed_is_refused(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    edit_head(outbox / "02-general-prosecutor.eml", b"campaign@mep-letter.eu", b"x@example.org")
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    assert "the From header is" in run.err


def test_a_draft_with_a_bare_cr_is_refused_naming_the_line(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    path = outbox / "01-president.eml"
    data = path.read_bytes()
    path.write_bytes(data + b"Hi\r\r.\r\nMAIL FROM:<x@evil.example>\r\n")
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    bad_line = data.count(b"\n") + 1
    assert f"line {bad_line} holds a bare CR" in run.err


@pytest.mark.parametrize(
    ("added", "said"),
    [
        (b"A NUL\0 byte\r\n", "holds a NUL byte"),
        (b"x" * 999 + b"\r\n", "is 999 bytes long, more than the 998 a mail line may have"),
    ],
    ids=["nul", "999-byte line"],
)
def test_a_draft_line_no_server_takes_is_refused_naming_the_line(
    bundled: Path, smtp_server: SmtpServer, added: bytes, said: str
) -> None:
    outbox = write_drafts(bundled)
    path = outbox / "02-general-prosecutor.eml"
    data = path.read_bytes()
    path.write_bytes(data + added)
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    bad_line = data.count(b"\n") + 1
    assert f"line {bad_line} {said}" in run.err
    assert "02-general-prosecutor.eml" in run.err


def test_a_draft_line_of_998_bytes_is_sent(bundled: Path, smtp_server: SmtpServer) -> None:
    outbox = write_drafts(bundled)
    path = outbox / "02-general-prosecutor.eml"
    path.write_bytes(path.read_bytes() + b"x" * 998 + b"\r\n")
    run = send(bundled, smtp_server, "--from-outbox", "--only", "general-prosecutor")
    assert run.status == 0, run.err
    assert len(smtp_server.messages) == 1


def test_a_draft_whose_content_type_was_changed_is_refused(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    edit_head(
        outbox / "03-national-security-committee.eml", b"multipart/alternative", b"multipart/mixed"
    )
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    assert "the letter is 'multipart/mixed', not 'multipart/alternative'" in run.err
    assert "03-national-security-committee.eml" in run.err


@pytest.mark.parametrize(
    ("edited", "said"),
    [
        ("Dear Mr Président,".encode(), "text/plain part holds characters typed into a"),
        (b"Dear Mr President =A3,", "text/plain part does not decode as utf-8"),
    ],
    ids=["typed 8-bit", "broken code"],
)
def test_a_draft_text_edited_so_it_reads_otherwise_is_refused(
    bundled: Path, smtp_server: SmtpServer, edited: bytes, said: str
) -> None:
    outbox = write_drafts(bundled)
    path = outbox / "01-president.eml"
    data = path.read_bytes()
    assert b"Dear Mr President," in data  # the text part comes first
    path.write_bytes(data.replace(b"Dear Mr President,", edited, 1))
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    assert said in run.err and "01-president.eml" in run.err


def test_a_draft_text_edited_in_quoted_printable_codes_is_sent_as_edited(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    path = outbox / "01-president.eml"
    data = path.read_bytes().replace(b"Dear Mr President,", b"Dear Mr Pr=C3=A9sident,", 1)
    path.write_bytes(data)
    run = send(bundled, smtp_server, "--from-outbox", "--only", "president")
    assert run.status == 0, run.err
    [message] = smtp_server.messages
    assert "Dear Mr Président," in plain_body(message.data)


def test_a_draft_saved_with_lf_line_ends_is_sent_with_crlf(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    path = outbox / "01-president.eml"
    crlf = path.read_bytes()
    path.write_bytes(crlf.replace(b"\r\n", b"\n"))
    run = send(bundled, smtp_server, "--from-outbox", "--only", "president")
    assert run.status == 0, run.stderr
    [message] = smtp_server.received_by("aprk@akorda.kz")
    assert message.data == crlf


def test_a_draft_with_mixed_line_ends_is_refused(bundled: Path, smtp_server: SmtpServer) -> None:
    outbox = write_drafts(bundled)
    path = outbox / "01-president.eml"
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n", 3))
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    assert "ends in LF while others end in CRLF" in run.err


def test_an_encoded_line_break_in_a_drafts_name_is_refused_without_a_traceback(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    outbox = write_drafts(bundled)
    edit_head(
        outbox / "01-president.eml",
        b"To: Nursultan Nazarbayev",
        b"To: =?utf-8?q?A=0D=0ABcc:_x@evil.example?=",
    )
    run = send(bundled, smtp_server, "--from-outbox")
    assert_refused_cleanly(run, smtp_server)
    assert "president" in run.err


# ---- 3. no symlink is followed -----------------------------------------------------------


def test_a_symlinked_lock_is_refused_and_its_target_untouched(
    bundled: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (bundled.parent / "outbox").mkdir()
    (bundled.parent / "outbox" / "send-log.jsonl.lock").symlink_to(target)
    run = send(bundled, smtp_server)
    assert run.status == 2 and "symbolic link" in run.err
    assert target.read_text() == "keep me\n"
    assert smtp_server.messages == []


@pytest.mark.parametrize("name", ["send-log.jsonl", "sent"])
def test_a_symlinked_log_or_archive_folder_is_refused(
    bundled: Path, smtp_server: SmtpServer, tmp_path: Path, name: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (bundled.parent / "outbox").mkdir()
    link = bundled.parent / "outbox" / name
    link.symlink_to(elsewhere / name if name != "sent" else elsewhere)
    run = send(bundled, smtp_server)
    assert run.status == 2 and "symbolic link" in run.err
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_outbox_is_refused_before_anything_is_made_through_it(
    bundled: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (bundled.parent / "outbox").symlink_to(elsewhere)
    for argv in (("send", "--yes"), ("drafts",)):
        run = run_cli(bundled, *argv, environ=smtp_environ(smtp_server))
        assert run.status == 2 and "symbolic link" in run.err, (argv, run.err)
    assert run_cli(bundled, "report").status == 2
    assert list(elsewhere.iterdir()) == []
    assert smtp_server.messages == []


def test_a_symlinked_archive_folder_is_refused_before_the_log_records_a_run(
    bundled: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    (bundled.parent / "outbox").mkdir()
    (bundled.parent / "outbox" / "sent").symlink_to(tmp_path)
    assert send(bundled, smtp_server).status == 2
    log = log_path(bundled)
    assert not log.exists() or log.read_bytes() == b""


def test_a_report_is_not_written_through_a_symlink(
    bundled: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    assert send(bundled, smtp_server).status == 0
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (bundled.parent / "outbox" / "report.html").symlink_to(target)
    run = run_cli(bundled, "report")
    assert run.status == 2 and "symbolic link" in run.err
    assert target.read_text() == "keep me\n"


def test_a_symlinked_draft_is_not_written_through(bundled: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (bundled.parent / "outbox").mkdir()
    (bundled.parent / "outbox" / "01-president.eml").symlink_to(target)
    run = run_cli(bundled, "drafts")
    assert run.status == 2 and "symbolic link" in run.err
    assert target.read_text() == "keep me\n"


def test_files_campaign_writes_are_private(bundled: Path, smtp_server: SmtpServer) -> None:
    previous = os.umask(0o002)
    try:
        assert send(bundled, smtp_server).status == 0
        write_drafts(bundled)
    finally:
        os.umask(previous)
    outbox = bundled.parent / "outbox"
    written = [p for p in outbox.rglob("*") if p.is_file() and p.name != "README.md"]
    assert len(written) >= 6 + 6 + 2
    assert {p.stat().st_mode & 0o777 for p in written} == {0o600}


def test_a_second_path_to_the_same_log_takes_the_same_lock(
    bundled: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    outbox = bundled.parent / "outbox"
    outbox.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(outbox)
    from campaign.sendlog import LogLock

    held = LogLock(outbox / "send-log.jsonl")
    held.acquire("a test holding the lock")
    try:
        run = send(bundled, smtp_server, "--log", alias / "send-log.jsonl")
    finally:
        held.release()
    assert run.status == 2 and "another run holds the log" in run.err
    assert smtp_server.messages == []


def test_temporary_files_left_by_a_killed_run_are_removed_by_the_next(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 3)
    sent = file.parent / "outbox" / "sent"
    sent.mkdir(parents=True)
    leftover = sent / ".campaign-tmp-99999-deadbeef"
    leftover.write_bytes(b"half a letter")
    environ = {**os.environ, **smtp_environ(smtp_server)}
    done = subprocess.run(
        [sys.executable, "-m", "campaign", "--file", str(file), "send", "--yes"],
        env=environ,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not leftover.exists()


# ---- 4. drafts removes only drafts it wrote ---------------------------------------------


def test_drafts_leaves_the_users_own_eml_files_alone_and_names_them(tmp_path: Path) -> None:
    file = copy_bundled(tmp_path / "c")
    review = tmp_path / "review"
    review.mkdir()
    (review / "17-note.eml").write_bytes(b"Subject: mine\r\n\r\nmy note\r\n")
    (review / "2023-invoice.eml").write_bytes(b"Subject: invoice\r\n\r\n\r\n")
    run = run_cli(file, "--outbox", review, "drafts")
    assert run.status == 0, run.stderr
    assert (review / "17-note.eml").read_bytes() == b"Subject: mine\r\n\r\nmy note\r\n"
    assert (review / "2023-invoice.eml").exists()
    assert "17-note.eml" in run.out and "2023-invoice.eml" in run.out


def test_drafts_removes_its_own_draft_of_a_recipient_no_longer_in_the_file(
    tmp_path: Path,
) -> None:
    file = copy_bundled(tmp_path / "c")
    outbox = write_drafts(file)
    text = file.read_text("utf-8")
    start = text.index('  - id: "ombudsman"')
    file.write_text(text[:start], "utf-8")
    run = run_cli(file, "drafts")
    assert run.status == 0, run.stderr
    assert not (outbox / "06-ombudsman.eml").exists()
    assert "06-ombudsman.eml" in run.out


# ---- 6. the terminal and the spreadsheet ------------------------------------------------


def test_a_servers_escape_sequences_never_reach_the_terminal(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    reply = f"2.0.0 Ok {ESC}]0;pwned\a{ESC}[31mqueued as Q1"
    server = make_smtp_server(faults=FaultScript(data=(250, reply)))
    run = send(bundled, server)
    assert run.status == 0, run.stderr
    assert ESC not in run.stdout + run.stderr
    assert "\\x1b]0;pwned\\x07\\x1b[31mqueued as Q1" in run.stdout
    for argv in (("log",), ("log", "--history", "president")):
        shown = run_cli(bundled, *argv)
        assert shown.status == 0 and ESC not in shown.stdout + shown.stderr
        assert "\\x1b" in shown.stdout


def test_a_recipient_field_with_escape_sequences_is_shown_escaped_in_preview(
    tmp_path: Path,
) -> None:
    file = copy_bundled(tmp_path / "c")
    text = file.read_text("utf-8")
    file.write_text(
        text.replace(
            'address:\n      - "010000, Astana city',
            'address:\n      - "\\e]0;x\\a010000, Astana city',
        ),
        "utf-8",
    )
    run = run_cli(file, "preview", "president")
    assert run.status == 0, run.stderr
    assert ESC not in run.stdout and "\a" not in run.stdout
    assert "\\x1b]0;x\\x07010000, Astana city" in run.stdout


def test_csv_cells_are_defused_for_spreadsheets_and_json_stays_exact(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    reply = f'=HYPERLINK("http://x") {ESC}[1m'
    server = make_smtp_server(faults=FaultScript(data=(250, reply)))
    assert send(bundled, server).status == 0
    as_csv = run_cli(bundled, "log", "--csv")
    assert as_csv.status == 0 and ESC not in as_csv.stdout
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {row["last_reply"] for row in rows} == {'\'=HYPERLINK("http://x") \\x1b[1m'}
    as_json = run_cli(bundled, "log", "--json")
    replies = {json.loads(line)["last_reply"] for line in as_json.stdout.splitlines()}
    assert replies == {reply}


# ---- 7. bounded inputs ------------------------------------------------------------------


def test_a_letter_over_the_servers_size_is_refused_before_mail_and_recorded_failed(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server(size_limit=2000)
    run = send(bundled, server, *FAST)
    assert run.status == 1
    assert server.messages == []
    assert not any(line.startswith("MAIL") for _, line in server.commands)
    assert all(status_of(bundled, rid) == "failed" for rid in BUNDLED_IDS)
    [result] = events(bundled, "result", "president")
    assert "SIZE" in result["replies"]["aprk@akorda.kz"]["reply"]


def test_a_letter_over_the_size_limit_stops_before_anything_leaves(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 2, text="{{ 'x' * 11000000 }}\n")
    run = send(file, smtp_server)
    assert run.status == 2 and "Traceback" not in run.stderr
    assert "limit" in run.err and "r001" in run.err
    assert smtp_server.sessions == 0
    assert files_in(file.parent / "outbox") == {}
