"""`campaign inbox` end to end: send to aiosmtpd, bounces and replies in a real IMAP server.

The bundled campaign goes to the loopback SMTP test server; delivery reports for two of its
addresses, an official's reply and an out-of-office answer then wait in a pymap IMAP server
over TLS; `campaign inbox` records them, `campaign log` shows them, a second reading records
nothing, and a corrected address is sent to alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from imap_server import ImapServer
from send_helpers import (
    CAMPAIGN_ID,
    SENDER,
    copy_bundled,
    events,
    log_path,
    read_log,
    run_cli,
    send,
    status_of,
)
from smtp_server import FaultScript, SmtpServer, TlsFiles, make_tls

from campaign.loading import Options
from campaign.report import build_report

DOMAIN = SENDER.split("@")[1]


def letter_id(recipient: str) -> str:
    return f"<{CAMPAIGN_ID}.{recipient}@{DOMAIN}>"


def delivery_report(recipient: str, address: str, status: str, diagnostic: str) -> bytes:
    """An RFC 3464 report in Postfix's layout, returning the letter's headers."""
    boundary = f"dsn-{recipient}"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>\r\n"
        f"To: {SENDER}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Mon, 23 Oct 2017 09:00:00 +0000\r\n"
        f"Message-ID: <dsn.{recipient}@relay.example.net>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\n"
        f"<{address}>: {diagnostic}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {address}\r\nOriginal-Recipient: rfc822;{address}\r\n"
        f"Action: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Campaign Office <{SENDER}>\r\nTo: {address}\r\n"
        f"Message-ID: {letter_id(recipient)}\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode("ascii")


def answer(
    recipient: str,
    sender: str,
    subject: str,
    *,
    automatic: bool = False,
    dated: datetime = datetime(2017, 10, 25, 10, 0),
    number: int = 0,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = SENDER
    message["Subject"] = subject
    message["Date"] = format_datetime(dated)
    message["Message-ID"] = f"<answer.{recipient}.{number}@example.net>"
    message["In-Reply-To"] = letter_id(recipient)
    message["References"] = letter_id(recipient)
    if automatic:
        message["Auto-Submitted"] = "auto-replied"
    message.set_content("Thank you for your letter.\n")
    return message.as_bytes()


def write_maildir(folder: Path, messages: list[bytes]) -> Path:
    for sub in ("new", "cur", "tmp"):
        (folder / sub).mkdir(parents=True)
    for number, data in enumerate(messages, start=1):
        (folder / "new" / f"{1700000000 + number}.{number}.host").write_bytes(data)
    return folder


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path)


@pytest.fixture
def sent(tmp_path: Path, smtp_server: SmtpServer) -> Path:
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, smtp_server).status == 0
    return file


@pytest.fixture
def mailbox(tls: TlsFiles) -> Iterator[ImapServer]:
    messages = [
        delivery_report(
            "national-security-committee",
            "press@knb.kz",
            "5.1.1",
            "550 5.1.1 <press@knb.kz>: Recipient address rejected: User unknown",
        ),
        delivery_report(
            "ombudsman",
            "mbudsman@ombudsman.kz",
            "5.1.1",
            "550 5.1.1 <mbudsman@ombudsman.kz>: User unknown",
        ),
        answer(
            "ministry-of-justice", "Ministry of Justice <kanc@adilet.gov.kz>", "Re: Open letter"
        ),
        answer("president", "aprk@akorda.kz", "Automatic reply: Open letter", automatic=True),
        answer("unrelated", "someone@example.net", "Re: something else"),
    ]
    with ImapServer(tls=tls, messages=messages, username="campaign@mep-letter.eu") as server:
        yield server


def imap_environ(server: ImapServer, tls: TlsFiles) -> dict[str, str]:
    return {
        "CAMPAIGN_IMAP_HOST": "127.0.0.1",
        "CAMPAIGN_IMAP_PORT": str(server.port),
        "CAMPAIGN_IMAP_SECURITY": "tls",
        "CAMPAIGN_IMAP_USERNAME": server.username,
        "CAMPAIGN_IMAP_PASSWORD": server.password,
        "CAMPAIGN_IMAP_CA_FILE": str(tls.ca_file),
    }


def test_bounces_and_replies_reach_the_log_and_the_review(
    sent: Path, mailbox: ImapServer, tls: TlsFiles
) -> None:
    before = mailbox.stored()
    run = run_cli(sent, "inbox", "--since", "2017-10-01", environ=imap_environ(mailbox, tls))
    assert run.status == 0, run.stderr
    assert "recorded 1 auto-reply, 2 bounces, 1 reply" in run.out
    assert "1 not about this campaign" in run.out
    assert mailbox.stored() == before  # read-only: no flag set, nothing moved
    assert status_of(sent, "national-security-committee") == "bounced"
    assert status_of(sent, "ombudsman") == "partial"
    rows = {
        row["recipient"]: row
        for row in map(json.loads, run_cli(sent, "log", "--json").stdout.splitlines())
    }
    [bounced] = [a for a in rows["ombudsman"]["addresses"] if a["address"].startswith("mbudsman")]
    assert bounced["outcome"] == "bounced" and "5.1.1" in bounced["reply"]
    assert rows["ministry-of-justice"]["replies"] == 1
    assert rows["president"]["auto_replies"] == 1 and rows["president"]["replies"] == 0
    replied = run_cli(sent, "log", "--replied", "--json").stdout.splitlines()
    assert [json.loads(line)["recipient"] for line in replied] == ["ministry-of-justice"]
    table = run_cli(sent, "log")
    assert "bounced" in table.out and "correct the address" in table.out
    assert "in the file and `campaign send --allow-changes` (the To line changes" in table.out
    history = run_cli(sent, "log", "--history", "national-security-committee")
    assert "bounce" in history.out and "5.1.1" in history.out
    for record in events(sent, "bounce") + events(sent, "reply"):
        kept = sent.parent / "outbox" / record["archive"]
        assert __import__("hashlib").sha256(kept.read_bytes()).hexdigest() == record["sha256"]


def test_the_report_of_a_bounced_letter_keeps_the_relays_acceptance(
    tmp_path: Path,
    make_smtp_server: Callable[..., SmtpServer],
    mailbox: ImapServer,
    tls: TlsFiles,
) -> None:
    server = make_smtp_server(faults=FaultScript(data=(250, "2.0.0 Ok: queued as 4XyZ1")))
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, server).status == 0
    [result] = events(file, "result", "national-security-committee")
    run = run_cli(file, "inbox", "--since", "2017-10-01", environ=imap_environ(mailbox, tls))
    assert run.status == 0, run.stderr
    data = build_report(
        Options(file), log_path(file), clock=lambda: datetime(2030, 1, 1, tzinfo=UTC)
    )
    [record] = [r for r in data.recipients if r.id == "national-security-committee"]
    assert record.status == "bounced"
    assert (record.accepted_at, record.queue_id) == (result["time"], "4XyZ1")
    [press] = record.addresses
    assert (press.address, press.outcome, press.queue_id) == ("press@knb.kz", "bounced", "4XyZ1")
    assert "5.1.1" in press.reply  # the bounce's reason, as before


def test_a_bounce_never_gives_the_report_its_queue_id(
    tmp_path: Path, make_smtp_server: Callable[..., SmtpServer]
) -> None:
    server = make_smtp_server(faults=FaultScript(data=(250, "2.0.0 Ok: queued as RELAY1")))
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, server).status == 0
    diagnostic = "550 5.1.1 <mbudsman@ombudsman.kz>: Recipient address rejected (id=REMOTE9)"
    maildir = write_maildir(
        tmp_path / "Maildir",
        [delivery_report("ombudsman", "mbudsman@ombudsman.kz", "5.1.1", diagnostic)],
    )
    assert run_cli(file, "inbox", "--maildir", maildir, "--since", "2017-10-01").status == 0
    data = build_report(
        Options(file), log_path(file), clock=lambda: datetime(2030, 1, 1, tzinfo=UTC)
    )
    [record] = [r for r in data.recipients if r.id == "ombudsman"]
    assert record.status == "partial"
    assert "REMOTE9" in record.last_reply  # the bounce is the last word ...
    assert record.queue_id == "RELAY1"  # ... but only the relay's 250 names a queue id
    assert {a.address: a.queue_id for a in record.addresses} == {
        "info@ombudsman.kz": "RELAY1",
        "mbudsman@ombudsman.kz": "RELAY1",
    }


def test_a_second_reading_records_nothing_new(
    sent: Path, mailbox: ImapServer, tls: TlsFiles
) -> None:
    environ = imap_environ(mailbox, tls)
    assert run_cli(sent, "inbox", "--since", "2017-10-01", environ=environ).status == 0
    log = log_path(sent).read_bytes()
    again = run_cli(sent, "inbox", "--since", "2017-10-01", environ=environ)
    assert again.status == 0
    assert "nothing new" in again.out and "4 recorded before" in again.out
    assert log_path(sent).read_bytes() == log


def test_a_corrected_bounced_address_is_sent_to_alone(
    sent: Path, mailbox: ImapServer, tls: TlsFiles, make_smtp_server: object
) -> None:
    assert (
        run_cli(sent, "inbox", "--since", "2017-10-01", environ=imap_environ(mailbox, tls)).status
        == 0
    )
    sent.write_text(sent.read_text("utf-8").replace("press@knb.kz", "press@knb.gov.kz"), "utf-8")
    with SmtpServer() as server:
        run = send(sent, server, "--allow-changes")
        assert run.status == 1, run.stderr  # the ombudsman's bounced address still needs fixing
        assert [m.rcpt_tos for m in server.messages] == [["press@knb.gov.kz"]]
    as_json = run_cli(sent, "log", "--json", "--recipient", "national-security-committee")
    assert json.loads(as_json.stdout)["status"] == "sent"  # the retired address no longer counts


def test_a_maildir_is_read_like_a_mailbox(sent: Path, tmp_path: Path) -> None:
    maildir = write_maildir(
        tmp_path / "Maildir",
        [delivery_report("president", "aprk@akorda.kz", "5.2.2", "552 5.2.2 Mailbox full")],
    )
    run = run_cli(sent, "inbox", "--maildir", maildir, "--since", "2017-10-01")
    assert run.status == 0, run.stderr
    assert status_of(sent, "president") == "bounced"
    [record] = [r for r in read_log(sent) if r["event"] == "bounce"]
    assert record["status"] == "5.2.2" and record["address"] == "aprk@akorda.kz"


def test_the_replies_column_shows_a_persons_latest_reply_whatever_the_reading_order(
    sent: Path, tmp_path: Path
) -> None:
    def dated(recipient: str, subject: str, number: int, month: int, day: int, **kw: bool) -> bytes:
        sender = {"ministry-of-justice": "Ministry <kanc@adilet.gov.kz>"}.get(
            recipient, "aprk@akorda.kz"
        )
        moment = datetime(2017, month, day, 9, 0, tzinfo=UTC)
        return answer(recipient, sender, subject, dated=moment, number=number, **kw)

    maildir = write_maildir(
        tmp_path / "Maildir",
        [
            dated("ministry-of-justice", "Re: 2", 2, 11, 2),
            dated("ministry-of-justice", "Re: 1", 1, 10, 30),
            dated("ministry-of-justice", "Away", 3, 11, 5, automatic=True),
            dated("president", "Away", 4, 10, 21, automatic=True),
            dated("president", "Away", 5, 10, 23, automatic=True),
        ],
    )
    assert run_cli(sent, "inbox", "--maildir", maildir, "--since", "2017-10-01").status == 0
    rows = {
        row["recipient"]: row
        for row in map(json.loads, run_cli(sent, "log", "--json").stdout.splitlines())
    }
    justice = rows["ministry-of-justice"]
    assert (justice["replies"], justice["auto_replies"]) == (2, 1)
    assert justice["last_answer"].startswith("2017-11-02")
    assert rows["president"]["last_answer"].startswith("2017-10-23")
    assert "2 (2017-11-02)" in run_cli(sent, "log", "--recipient", "ministry-of-justice").out


def test_the_next_step_names_the_most_common_bounce_status_once(sent: Path, tmp_path: Path) -> None:
    maildir = write_maildir(
        tmp_path / "Maildir",
        [
            delivery_report("president", "aprk@akorda.kz", "5.2.2", "552 5.2.2 Mailbox full"),
            delivery_report(
                "national-security-committee", "press@knb.kz", "5.1.1", "550 5.1.1 User unknown"
            ),
            delivery_report(
                "ministry-of-justice", "kanc@adilet.gov.kz", "5.1.1", "550 5.1.1 No such user"
            ),
        ],
    )
    assert run_cli(sent, "inbox", "--maildir", maildir, "--since", "2017-10-01").status == 0
    out = " ".join(run_cli(sent, "log").out.split())
    assert "3 bounced (5.1.1: 550 5.1.1 User unknown): correct the address" in out
    assert "bounced bounced" not in out


def test_the_return_path_is_the_envelope_sender(tmp_path: Path) -> None:
    file = copy_bundled(tmp_path / "campaign")
    text = file.read_text("utf-8")
    file.write_text(
        text.replace("  from:", '  return_path: "bounces@mep-letter.eu"\n  from:', 1), "utf-8"
    )
    with SmtpServer() as server:
        assert send(file, server).status == 0
        envelope_senders = {m.mail_from for m in server.messages}
        headers = [m.data.split(b"\r\n\r\n", 1)[0] for m in server.messages]
    assert envelope_senders == {"bounces@mep-letter.eu"}
    assert all(f"<{SENDER}>".encode() in h and b"bounces@" not in h for h in headers)


def test_log_at_80_columns_keeps_ids_and_statuses_whole_when_there_are_answers(
    sent: Path, tmp_path: Path
) -> None:
    maildir = write_maildir(
        tmp_path / "Maildir",
        [
            delivery_report("president", "aprk@akorda.kz", "5.1.1", "550 5.1.1 User unknown"),
            delivery_report(
                "ministry-of-internal-affairs", "Kense@mvd.kz", "5.2.2", "552 5.2.2 Mailbox full"
            ),
            answer("ombudsman", "info@ombudsman.kz", "Re: Open letter", number=1),
            answer("general-prosecutor", "Gp-rk@prokuror.kz", "Away", automatic=True, number=2),
        ],
    )
    assert run_cli(sent, "inbox", "--maildir", maildir, "--since", "2017-10-01").status == 0
    expected = {
        "president": "bounced",
        "general-prosecutor": "sent",
        "national-security-committee": "sent",
        "ministry-of-internal-affairs": "bounced",
        "ministry-of-justice": "sent",
        "ombudsman": "sent",
    }
    narrow = run_cli(sent, "log", environ={"COLUMNS": "80"}).stdout.splitlines()
    assert max(len(line) for line in narrow) <= 80
    for rid, status in expected.items():
        assert len([line for line in narrow if line.split()[:2] == [rid, status]]) == 1, rid
    wider = run_cli(sent, "log", environ={"COLUMNS": "100"}).stdout
    assert "replies" in wider and "1 (2017-10-25)" in wider
