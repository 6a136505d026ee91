"""A campaign whose log holds every kind of recipient, written by real sends to loopback servers.

`send_mixed(folder)` runs `campaign send` (in-process) against aiosmtpd servers on 127.0.0.1
with scripted faults, so the log, the sent archive and the replies are the real thing:

* a `--test-to` run first (two test sends, never counted as sent);
* run 1: `sent-one` accepted (the server's 250 carries HTML), `partial-one` accepted at one
  address and refused at the other (550 with an `<img onerror>` and ANSI escapes),
  `deferred-one` greylisted for ever (451 with markup and a BEL), `failed-one` refused (550
  with a link);
* run 2: `unknown-one`, the connection dropped after the data;
* run 3: `resolved-one`, dropped likewise, then `campaign resolve --as sent` with a reason in
  markup;
* `pending-one` is never sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from campaign_factory import Run, write_campaign, yaml_quote
from log_helpers import campaign, send
from smtp_server import DROP, FaultScript, SmtpServer

from campaign.loading import Options
from campaign.report import ReportData, make_report

CAMPAIGN_ID = "report-test"
HOSTILE_NAME = 'Alice <script>document.title="pwned-name"</script> & "Co"'
HOSTILE_ORG = "Ministry \x1b[2J of <i>Tests</i>"
SENT_REPLY = "2.0.0 Ok: queued as QR0001 <script>document.title='pwned-reply'</script>"
REFUSED_REPLY = "5.1.1 <img src=x onerror=\"document.title='pwned-img'\"> \x1b[31mno such user\x1b[0m"
GREYLIST_REPLY = '4.7.1 "greylisted" <b>try later</b> \x07'
FAILED_REPLY = '5.7.1 <a href="http://evil.example/">refused</a> by policy'
TEST_REPLY = "2.0.0 test taken <ok> as TQ0001"
RESOLVE_REASON = "operator: queued as 4XyZ <script>document.title='pwned-reason'</script>"
TEST_TO = "tester@example.com"

RECIPIENTS = (
    ("sent-one", HOSTILE_NAME, ("alice@example.com",), HOSTILE_ORG),
    ("partial-one", "Bob Partial", ("bob@example.net", "bob.old@example.net"), ""),
    ("deferred-one", "Carol Deferred", ("carol@example.org",), ""),
    ("failed-one", "Dave Failed", ("dave@example.com",), ""),
    ("unknown-one", "Erin Unknown", ("erin@example.net",), ""),
    ("resolved-one", "Frank Resolved", ("frank@example.org",), ""),
    ("pending-one", "Grace Pending", ("grace@example.com",), ""),
)
EXPECTED_STATUS = {
    "sent-one": "sent",
    "partial-one": "partial",
    "deferred-one": "deferred",
    "failed-one": "failed",
    "unknown-one": "unknown",
    "resolved-one": "sent",
    "pending-one": "pending",
}
FAST = ("--backoff", "0", "--timeout", "2")


def campaign_yaml() -> str:
    lines = [
        "campaign:",
        f'  id: "{CAMPAIGN_ID}"',
        '  subject: "A letter for {{ recipient.name }}"',
        '  from: "Report Tester <sender@example.org>"',
        "recipients:",
    ]
    for rid, name, emails, organisation in RECIPIENTS:
        lines += [
            f'  - id: "{rid}"',
            f"    name: {yaml_quote(name)}",
            "    emails: [" + ", ".join(f'"{e}"' for e in emails) + "]",
        ]
        if organisation:
            lines.append(f"    organisation: {yaml_quote(organisation)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Mixed:
    """The campaign folder after the runs, and what every run printed."""

    folder: Path
    file: Path
    runs: tuple[Run, ...]

    @property
    def outbox(self) -> Path:
        return self.folder / "outbox"

    @property
    def log(self) -> Path:
        return self.outbox / "send-log.jsonl"


def send_mixed(folder: Path) -> Mixed:
    file = write_campaign(folder, campaign_yaml())
    runs = []
    with SmtpServer(faults=FaultScript(data=[(250, TEST_REPLY)])) as server:
        run = send(file, server, "--test-to", TEST_TO, "--only", "sent-one", "partial-one", *FAST)
        assert run.status == 0, run.stdout + run.stderr
        runs.append(run)
    faults = FaultScript(
        rcpt={
            "bob.old@example.net": (550, REFUSED_REPLY),
            "carol@example.org": (451, GREYLIST_REPLY),
            "dave@example.com": (550, FAILED_REPLY),
        },
        data=[(250, SENT_REPLY), (250, "2.0.0 Ok: queued as QR0002")],
    )
    with SmtpServer(faults=faults) as server:
        only = ("sent-one", "partial-one", "deferred-one", "failed-one")
        # One connection: the letters meet the DATA replies in file order.
        runs.append(
            send(file, server, "--only", *only, "--retries", "1", "--concurrency", "1", *FAST)
        )
    for rid in ("unknown-one", "resolved-one"):
        with SmtpServer(faults=FaultScript(data=DROP)) as server:
            runs.append(send(file, server, "--only", rid, *FAST))
    resolved = campaign(file, "resolve", "resolved-one", "--as", "sent", "--reason", RESOLVE_REASON)
    assert resolved.status == 0, resolved.stderr
    return Mixed(folder, file, tuple(runs))


def report_of(file: Path, out: Path, clock: datetime) -> ReportData:
    """What `campaign report --out OUT` will do, through the library call the CLI wraps."""
    return make_report(
        Options(file), file.parent / "outbox" / "send-log.jsonl", out, clock=lambda: clock
    )
