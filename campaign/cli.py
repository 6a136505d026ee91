"""The command line: parse arguments, call the library, print through `ui`, map errors to exits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import getpass
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO

from campaign import __version__
from campaign.addresses import AddressError, normalise, placeholder_reason
from campaign.credentials import PasswordBackend, forget_password, lookup_password, store_password
from campaign.display import listed, visible
from campaign.drafts import deliver_all, read_outbox, stray_drafts, write_drafts
from campaign.errors import (
    CampaignError,
    RunRefused,
    SmtpSettingsError,
    UsageError,
    ValidationErrors,
)
from campaign.loading import Options, load_campaign
from campaign.models import SMTP_SECURITY_MODES, CampaignFile, Mailbox, require_known
from campaign.outcomes import RunEffect, connect_effect
from campaign.pipeline import SETTLEABLE, Plan, SendOptions, SendSession, resolve
from campaign.prepare import Clock, prepare, utc_now
from campaign.review import (
    LogFollower,
    Review,
    as_json_lines,
    build_review,
    dry_run_rows,
    gone_from_the_file,
    history_of,
    load_roster,
    load_roster_and_log,
    send_summary,
    write_csv,
)
from campaign.safefiles import write_file
from campaign.sendlog import Event, Status, replay
from campaign.settings import PASSWORD_VARIABLE, SmtpSettings, resolve_settings
from campaign.store import MessageStore
from campaign.transports.base import ConnectFailure
from campaign.transports.memory import MemoryTransport
from campaign.transports.smtp import SmtpTransport, probe
from campaign.ui import (
    PlainProgress,
    RichProgress,
    Ui,
    columns_from,
    follow,
    show_dry_run,
    show_history,
    show_plan,
    show_review,
    show_summary,
)


class ExitStatus(IntEnum):
    OK = 0
    INCOMPLETE = 1
    BAD_INPUT = 2
    INTERRUPTED = 130


@dataclass
class Environment:
    """What the commands may touch of the outside world; tests pass their own."""

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Clock = utc_now
    terminal: bool | None = None
    prompt: Callable[[str], str] | None = None
    keyring: PasswordBackend | None = None  # None: the OS keyring, if there is one
    width: int | None = None  # the terminal's columns; None: as the terminal says

    def is_terminal(self) -> bool:
        if self.terminal is not None:
            return self.terminal
        return bool(self.stdin.isatty() and self.stdout.isatty())


STRAYS_SHOWN = 10  # stray .eml files named in the warning; the rest are counted
EXAMPLES = {
    "send": "campaign send --test-to me@example.org\n  campaign send --dry-run\n"
    "  CAMPAIGN_SMTP_HOST=smtp.example.org campaign send",
    "log": "campaign log\n  campaign log --status unknown deferred\n"
    "  campaign log --history ombudsman\n  campaign log --csv > delivery.csv",
    "resolve": "campaign resolve ombudsman --as sent --reason 'queued as 4XyZ in the server log'",
    "check": "campaign check\n  campaign --file other/recipients.yaml check --check-dns",
    "preview": "campaign preview president\n  campaign preview --html ombudsman",
    "drafts": "campaign drafts\n  campaign drafts --outbox /tmp/review",
    "init": "campaign init my-campaign\n  campaign --file my-campaign/recipients.yaml check",
    "import": "campaign import people.csv > recipients-section.yaml\n"
    "  campaign import people.csv --out recipients-section.yaml",
    "password": "campaign password set\n  campaign password forget",
    "report": "campaign report\n  campaign report --out /tmp/kz-letter.html",
    "inbox": "CAMPAIGN_IMAP_HOST=imap.example.org CAMPAIGN_IMAP_USERNAME=me campaign inbox\n"
    "  campaign inbox --maildir ~/Maildir\n  campaign inbox --mbox bounces.mbox --since 2017-10-19",
}

INBOX_ENVIRONMENT = """environment:
  CAMPAIGN_IMAP_HOST      the IMAP server (or --imap-host, or imap.host in the file)
  CAMPAIGN_IMAP_PORT      its port (default 993 for tls, 143 for starttls)
  CAMPAIGN_IMAP_SECURITY  tls (default), starttls, or none (loopback only)
  CAMPAIGN_IMAP_USERNAME  the mailbox's login
  CAMPAIGN_IMAP_PASSWORD  its password (else the OS keyring, else a prompt; never in the file)
  CAMPAIGN_IMAP_CA_FILE   a CA certificate to trust besides the system's
  CAMPAIGN_IMAP_FOLDER    the folder to read (default INBOX)"""

SEND_ENVIRONMENT = """environment:
  CAMPAIGN_SMTP_HOST      the SMTP server (or --smtp-host, or smtp.host in the file)
  CAMPAIGN_SMTP_PORT      its port (default 587 for starttls, 465 for tls)
  CAMPAIGN_SMTP_SECURITY  starttls (default), tls, or none (loopback only)
  CAMPAIGN_SMTP_USERNAME  the login, if the server wants one
  CAMPAIGN_SMTP_PASSWORD  its password (else the OS keyring, else a prompt; never in the file)
  CAMPAIGN_SMTP_CA_FILE   a CA certificate to trust besides the system's"""


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--file",
        type=Path,
        default=default if suppress else Path("recipients.yaml"),
        help="the campaign file (default: recipients.yaml)",
    )
    parser.add_argument(
        "--templates",
        type=Path,
        default=default,
        help="the templates folder (default: templates/ beside the file)",
    )
    parser.add_argument(
        "--outbox",
        type=Path,
        default=default,
        help="the outbox folder (default: outbox/ beside the file)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign",
        description="Send one open letter, personalised, to a list of officials.",
        epilog="Start with `campaign check`, then `campaign preview` and `campaign drafts`.",
    )
    parser.add_argument("--version", action="version", version=f"campaign {__version__}")
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(handler=None)

    def command(name: str, help_text: str, epilog: str = "") -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {EXAMPLES[name]}" + (f"\n\n{epilog}" if epilog else ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _global_options(sub, suppress=True)
        return sub

    check = command("check", "validate the file, every address and every letter; write nothing")
    check.add_argument(
        "--check-dns", action="store_true", help="also check that each domain accepts mail (DNS)"
    )
    check.set_defaults(handler=run_check)

    preview = command("preview", "show the messages on the terminal; write and send nothing")
    preview.add_argument("ids", nargs="*", metavar="ID", help="recipients to show (default: all)")
    preview.add_argument("--html", action="store_true", help="show the HTML part instead")
    preview.set_defaults(handler=run_preview)

    drafts = command("drafts", "write one .eml per recipient into the outbox")
    drafts.set_defaults(handler=run_drafts)

    init = command("init", "write a starter campaign into a new folder; overwrite nothing")
    init.add_argument("folder", type=Path, metavar="DIR", help="where to write it")
    init.set_defaults(handler=run_init)

    importing = command("import", "turn a spreadsheet (CSV) into the recipients: section")
    importing.add_argument("csv", type=Path, metavar="FILE.csv", help="the spreadsheet export")
    importing.add_argument("--out", type=Path, help="write the YAML here (default: stdout)")
    importing.add_argument(
        "--check-dns", action="store_true", help="also check that each domain accepts mail"
    )
    importing.set_defaults(handler=run_import)

    inbox = command(
        "inbox",
        "read the campaign's mailbox: bounces, automatic replies and replies into the log",
        INBOX_ENVIRONMENT,
    )
    sources = inbox.add_mutually_exclusive_group()
    sources.add_argument("--maildir", type=Path, metavar="DIR", help="read a local Maildir")
    sources.add_argument("--mbox", type=Path, metavar="FILE", help="read a local mbox file")
    inbox.add_argument(
        "--since",
        type=_date,
        metavar="YYYY-MM-DD",
        help="only mail from this day on (default: the day of the campaign's first send)",
    )
    inbox.add_argument("--imap-host", help="IMAP server (overrides CAMPAIGN_IMAP_HOST)")
    inbox.add_argument("--imap-port", type=_port, help="IMAP port (overrides CAMPAIGN_IMAP_PORT)")
    inbox.add_argument("--imap-folder", help="folder (overrides CAMPAIGN_IMAP_FOLDER)")
    inbox.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="IMAP timeout (default 30)"
    )
    inbox.add_argument("--log", type=Path, help="the send log (default: outbox/send-log.jsonl)")
    inbox.set_defaults(handler=run_inbox)

    report = command(
        "report", "write the delivery record as one self-contained HTML page, to share or print"
    )
    report.add_argument("--out", type=Path, help="where to write it (default: outbox/report.html)")
    report.add_argument("--log", type=Path, help="the send log (default: outbox/send-log.jsonl)")
    report.set_defaults(handler=run_report)

    password = command("password", "keep the SMTP password in the OS keyring, or remove it")
    password.add_argument(
        "action",
        choices=("set", "forget"),
        help="set: ask for it, check it by logging in, then store it; forget: remove it",
    )
    password.add_argument("--smtp-host", help="SMTP server (overrides CAMPAIGN_SMTP_HOST)")
    password.add_argument("--smtp-port", type=_port, help="SMTP port")
    password.add_argument(
        "--security", choices=SMTP_SECURITY_MODES, help="starttls (default), tls, or none"
    )
    password.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="SMTP timeout (default 30)"
    )
    password.set_defaults(handler=run_password)

    send = command(
        "send",
        "send the campaign over SMTP, recording every attempt in the send log",
        SEND_ENVIRONMENT,
    )
    send.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    send.add_argument("--dry-run", action="store_true", help="show the plan; connect to nothing")
    send.add_argument("--only", nargs="+", metavar="ID", help="send to these recipients alone")
    send.add_argument(
        "--from-outbox", action="store_true", help="send exactly the reviewed .eml drafts"
    )
    send.add_argument("--test-to", metavar="ADDR", help="send every letter to ADDR only, as a test")
    send.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="SMTP connections at once, at most (default 4)",
    )
    send.add_argument(
        "--rate",
        type=_positive_float,
        metavar="N",
        help="at most N letters per minute (a ceiling: the pace adapts below it to what the"
        " server accepts)",
    )
    send.add_argument(
        "--max-wait",
        type=_positive_float,
        default=30.0,
        metavar="MINUTES",
        help="give up after this long with nothing accepted, leaving the rest deferred"
        " (default 30)",
    )
    send.add_argument(
        "--retries",
        type=_non_negative_int,
        default=3,
        metavar="N",
        help="retries of a temporary failure within the run (default 3)",
    )
    send.add_argument(
        "--backoff",
        type=_non_negative_float,
        default=2.0,
        metavar="SECONDS",
        help="base of the exponential backoff (default 2)",
    )
    send.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="SMTP command timeout (default 30)",
    )
    send.add_argument(
        "--retry-unknown",
        action="store_true",
        help="send again to recipients whose outcome is unknown",
    )
    send.add_argument(
        "--allow-changes",
        action="store_true",
        help="send although the letter changed since part of it was sent",
    )
    send.add_argument("--log", type=Path, help="the send log (default: outbox/send-log.jsonl)")
    send.add_argument("--smtp-host", help="SMTP server (overrides CAMPAIGN_SMTP_HOST)")
    send.add_argument("--smtp-port", type=_port, help="SMTP port (overrides CAMPAIGN_SMTP_PORT)")
    send.add_argument(
        "--security",
        choices=SMTP_SECURITY_MODES,
        help="starttls (default), tls, or none (loopback only)",
    )
    send.set_defaults(handler=run_send)

    resolve = command(
        "resolve",
        "settle what the log cannot: an unknown outcome, or letters to send again",
    )
    resolve.add_argument(
        "recipients", nargs="*", metavar="ID", help="the recipients to settle (or --status)"
    )
    resolve.add_argument(
        "--status",
        nargs="+",
        choices=sorted(SETTLEABLE[Status.PENDING]),
        type=Status,
        metavar="STATUS",
        help="settle every recipient with these statuses (unknown, failed, partial, deferred)",
    )
    resolve.add_argument(
        "--as",
        dest="settle_as",
        choices=(Status.SENT, Status.PENDING),
        type=Status,
        required=True,
        help="sent: the server's log shows it took the letter (unknown only);"
        " pending: send it again (unknown, failed, partial or deferred)",
    )
    resolve.add_argument(
        "--reason", required=True, help="what you checked or fixed, kept in the log"
    )
    resolve.add_argument("--log", type=Path, help="the send log (default: outbox/send-log.jsonl)")
    resolve.set_defaults(handler=run_resolve)

    log = command("log", "review the delivery log: where every letter stands")
    log.add_argument(
        "--status",
        nargs="+",
        choices=list(Status),
        type=Status,
        metavar="STATUS",
        help=f"only these statuses ({', '.join(Status)})",
    )
    log.add_argument("--recipient", nargs="+", metavar="ID", help="only these recipients")
    log.add_argument(
        "--replied", action="store_true", help="only recipients who replied (see `campaign inbox`)"
    )
    log.add_argument("--history", metavar="ID", help="every event of one recipient, in order")
    formats = log.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="one JSON object per recipient")
    formats.add_argument("--csv", action="store_true", help="CSV with a header row")
    log.add_argument("--follow", action="store_true", help="keep the table live while a send runs")
    log.add_argument("--interval", type=_positive_float, default=1.0, help=argparse.SUPPRESS)
    log.add_argument("--log", type=Path, help="the send log (default: outbox/send-log.jsonl)")
    log.set_defaults(handler=run_log)
    return parser


def _number(kind: type, minimum: float, strict: bool) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum or (strict and value == minimum):
            bound = "greater than" if strict else "at least"
            raise argparse.ArgumentTypeError(f"must be {bound} {minimum}")
        return value

    return parse


_positive_int = _number(int, 0, True)
_non_negative_int = _number(int, 0, False)
_positive_float = _number(float, 0, True)
_non_negative_float = _number(float, 0, False)


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2017-10-19") from None


def _port(text: str) -> int:
    value = _number(int, 0, True)(text)
    assert isinstance(value, int)
    if value > 65535:
        raise argparse.ArgumentTypeError("a port is at most 65535")
    return value


@dataclass(frozen=True)
class Context:
    args: argparse.Namespace
    env: Environment
    ui: Ui

    @property
    def file(self) -> Path:
        path: Path = self.args.file
        return path

    @property
    def outbox(self) -> Path:
        outbox: Path | None = self.args.outbox
        return outbox if outbox is not None else self.file.parent / "outbox"

    @property
    def log_path(self) -> Path:
        log: Path | None = getattr(self.args, "log", None)
        return log if log is not None else self.outbox / "send-log.jsonl"

    def load(self, *, check_dns: bool = False, notices: bool = True) -> CampaignFile:
        progress = self.ui.dns_progress if check_dns else None
        return load_campaign(
            Options(
                self.file,
                self.args.templates,
                check_dns=check_dns,
                dns_progress=progress,
                notices=notices,
            )
        )


def run_check(ctx: Context) -> ExitStatus:
    source = ctx.load(check_dns=ctx.args.check_dns)
    with MessageStore() as store:
        try:
            prepare(source, source.recipients, store, clock=ctx.env.clock)
        except ValidationErrors as err:
            ctx.ui.check_report(source, err.errors)
            raise
    ctx.ui.check_report(source)
    ctx.ui.note(
        f"All {len(source.recipients)} letters render. Next: `campaign preview` to read them,"
        " `campaign drafts` to write them to the outbox."
    )
    return ExitStatus.OK


def run_preview(ctx: Context) -> ExitStatus:
    source = ctx.load()
    recipients = source.select(ctx.args.ids)
    terminal = MemoryTransport(
        name="terminal", show=lambda draft, data: ctx.ui.preview(draft, data, html=ctx.args.html)
    )
    with MessageStore() as store:
        prepared = prepare(source, recipients, store, clock=ctx.env.clock)
        deliver_all(prepared, terminal)
    ctx.ui.note(f"{len(prepared.drafts)} message(s) shown; nothing was written or sent.")
    return ExitStatus.OK


def run_drafts(ctx: Context) -> ExitStatus:
    source = ctx.load()
    with MessageStore() as store:
        prepared = prepare(source, source.recipients, store, clock=ctx.env.clock)
        report = write_drafts(prepared, ctx.outbox)
    ctx.ui.drafts_report(report, ctx.outbox)
    return ExitStatus.OK


def run_send(ctx: Context) -> ExitStatus:
    args = ctx.args
    if args.test_to is not None and args.from_outbox:
        raise UsageError("--test-to and --from-outbox cannot be combined")
    source = ctx.load()
    _refuse_placeholder_sender(source)
    if not args.dry_run and not args.yes:
        _require_confirmation_channel(ctx)
    recipients = source.select(args.only)
    test_to = _test_mailbox(args.test_to) if args.test_to else None
    options = SendOptions(
        concurrency=args.concurrency,
        rate=args.rate,
        retries=args.retries,
        backoff=args.backoff,
        retry_unknown=args.retry_unknown,
        allow_changes=args.allow_changes,
        test=test_to is not None,
        max_wait=args.max_wait * 60,
    )
    settings: SmtpSettings | SmtpSettingsError
    try:
        settings = resolve_settings(
            ctx.env.environ,
            source.campaign.smtp,
            host=args.smtp_host,
            port=args.smtp_port,
            security=args.security,
        )
    except SmtpSettingsError as err:
        if not args.dry_run:
            raise
        settings = err  # a dry run shows its plan, then fails as the send would
    with MessageStore() as store:
        if args.from_outbox:
            _warn_of_stray_drafts(ctx, source)  # first: it may explain a draft found missing
            prepared = read_outbox(source, recipients, ctx.outbox, store, clock=ctx.env.clock)
        else:
            # Every recipient, even with --only: nothing leaves before all of them render,
            # and a change to anyone's letter is noticed.
            prepared = prepare(
                source,
                source.recipients,
                store,
                clock=ctx.env.clock,
                test_to=test_to,
                test_run=uuid.uuid4().hex[:8] if test_to else "",
            )
        with SendSession(
            ctx.log_path, prepared, options, clock=ctx.env.clock, lock=not args.dry_run
        ) as session:
            only = {r.id for r in recipients} if args.only else None
            plan = session.plan(only)
            _show_plan(ctx, source, session, plan, settings)
            if isinstance(settings, SmtpSettingsError):
                raise settings
            if args.dry_run:
                if settings.username and not settings.password:
                    _password_source(ctx, settings)  # fails as the send would
                show_dry_run(ctx.ui, dry_run_rows(plan, session.history, prepared.drafts, only))
                ctx.ui.note("Dry run: nothing was sent and nothing was written.")
                return ExitStatus.OK
            # The recipients' data goes before the letters do: the drafts have all a run
            # needs, and the history that grows as it runs takes that memory's place.
            del source, recipients
            return _send_planned(ctx, session, plan, settings)


def _warn_of_stray_drafts(ctx: Context, source: CampaignFile) -> None:
    stray = stray_drafts(source, ctx.outbox)
    if stray:
        shown = ", ".join(visible(name) for name in stray[:STRAYS_SHOWN])
        more = f" and {len(stray) - STRAYS_SHOWN} more" if len(stray) > STRAYS_SHOWN else ""
        ctx.ui.warning(
            f"{_plural(len(stray), '.eml file', '.eml files')} in {ctx.outbox} that no"
            f" recipient of the campaign file has will not be sent: {shown}{more}"
        )


def _refuse_placeholder_sender(source: CampaignFile) -> None:
    """Nothing leaves from a placeholder sender, not even a test."""
    campaign = source.campaign
    for key, address in (
        ("from", campaign.sender.address),
        ("return_path", campaign.return_path),
    ):
        reason = placeholder_reason(address) if address else None
        if reason:
            raise RunRefused(
                f"the sender {address} is a placeholder: {reason}; nothing was sent",
                path=campaign.source,
                line=campaign.data_line(key),
                field=f"campaign.{key}",
                hint="set it to the campaign's real address before sending",
            )


def _test_mailbox(text: str) -> Mailbox:
    try:
        return Mailbox("", normalise(text))
    except AddressError as err:
        raise UsageError(f"--test-to {text!r} is not a valid address: {err}") from None


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _show_plan(
    ctx: Context,
    source: CampaignFile,
    session: SendSession,
    plan: Plan,
    settings: SmtpSettings | SmtpSettingsError,
) -> None:
    """What the run would do, every warning `check` gives, before any question."""
    campaign = source.campaign
    skipped = ", ".join(f"{len(ids)} {status}" for status, ids in sorted(plan.skipped.items()))
    not_chosen = len(source.recipients) - len(plan.messages) - sum(map(len, plan.skipped.values()))
    if not_chosen and ctx.args.only:
        skipped = ", ".join(filter(None, [skipped, f"{not_chosen} not in --only"]))
    server = settings.describe() if isinstance(settings, SmtpSettings) else f"invalid: {settings}"
    sender = campaign.sender.address
    if campaign.return_path:
        sender += f" (bounces to {campaign.return_path})"
    show_plan(
        ctx.ui,
        [
            ("campaign", campaign.id + (" (TEST SEND)" if session.options.test else "")),
            (
                "letters",
                f"{_plural(len(plan.messages), 'letter', 'letters')} to"
                f" {_plural(plan.address_count, 'address', 'addresses')}",
            ),
            ("skipped", skipped or "none"),
            ("server", server),
            ("from", sender),
            ("log", str(ctx.log_path)),
        ],
    )
    ctx.ui.notices(source)
    unknown = len(plan.skipped.get(Status.UNKNOWN, []))
    if unknown:
        ctx.ui.note(
            f"{unknown} recipient(s) are unknown: the server may hold their letter."
            " Check its log, then `campaign resolve ID --as sent|pending`, or resend with"
            " --retry-unknown."
        )


def _send_planned(
    ctx: Context, session: SendSession, plan: Plan, settings: SmtpSettings
) -> ExitStatus:
    campaign = session.prepared.campaign
    options = session.options
    earlier_done = all(status == Status.SENT for status in plan.skipped)
    if not plan.messages:
        ctx.ui.note("Nothing to send.")
        return ExitStatus.OK if earlier_done else ExitStatus.INCOMPLETE
    settings = _with_password(ctx, settings)
    ctx.ui.note(
        _probe(settings, ctx.args.timeout, options.retries, options.backoff, ctx.ui.warning)
    )
    if not _confirm(ctx, plan, settings, campaign.sender.address):
        ctx.ui.note("Not confirmed: nothing was sent.")
        return ExitStatus.INCOMPLETE
    progress = RichProgress(ctx.ui) if ctx.ui.terminal else PlainProgress(ctx.ui)
    transports = [
        SmtpTransport(settings, timeout=ctx.args.timeout)
        for _ in range(min(options.concurrency, len(plan.messages)))
    ]
    result = session.run(plan, transports, progress)
    rows, left_out = send_summary(plan, session.history, result, test=options.test)
    show_summary(ctx.ui, rows, left_out)
    counts = result.counts()
    said = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    said += f" ({_plural(result.connections, 'connection', 'connections')})"
    if options.test:
        said = f"Test send to {ctx.args.test_to}: {said}; no recipient counts as sent for it"
    ctx.ui.note(said)
    if counts[Status.UNKNOWN]:
        ctx.ui.note(
            f"{counts[Status.UNKNOWN]} unknown: the connection was lost after the letter was"
            " sent; the server may have it. Check with its operator, then `campaign resolve`,"
            " or resend with --retry-unknown."
        )
    if counts[Status.DEFERRED]:
        ctx.ui.note(
            f"{counts[Status.DEFERRED]} deferred: run `campaign send` again later to retry."
        )
    if result.gave_up:
        ctx.ui.problem(
            f"the server took nothing for too long: {result.gave_up}",
            "the letters left are deferred; run `campaign send` again later, or raise --max-wait",
        )
        return ExitStatus.INCOMPLETE
    if result.stopped:
        ctx.ui.problem(
            result.stopped,
            "nothing else was attempted and no recipient was counted as failed for it;"
            " fix what the server says, then run `campaign send` again",
        )
        return ExitStatus.INCOMPLETE
    return ExitStatus.OK if result.complete and earlier_done else ExitStatus.INCOMPLETE


def _probe(
    settings: SmtpSettings,
    timeout: float,
    retries: int = 0,
    backoff: float = 0,
    waiting: Callable[[str], None] | None = None,
) -> str:
    """Meet the server (connect, TLS, login) before the question; a failure is the run's.

    What may pass (a refused connection, a busy greeting) is tried `retries` more times; a
    server silent for the whole timeout is not (a wrong port or security mode, which waiting
    again would not mend).
    """
    for attempt in range(retries + 1):
        try:
            return asyncio.run(probe(settings, timeout))
        except ConnectFailure as failure:
            stop = connect_effect(failure) == RunEffect.STOP or failure.timed_out
            if stop or attempt == retries:
                raise RunRefused(
                    f"{settings.address}: {failure.step} failed: {failure.reason};"
                    " nothing was sent",
                    hint=failure.hint,
                ) from None
            pause = backoff * 2**attempt
            if waiting is not None:
                waiting(
                    f"{settings.address}: {failure.step} failed: {failure.reason};"
                    f" trying again in {pause:g} s ({attempt + 1} of {retries})"
                )
            time.sleep(pause)
    raise AssertionError("unreachable")


def _with_password(ctx: Context, settings: SmtpSettings) -> SmtpSettings:
    """The password from the environment, else the OS keyring, else a prompt."""
    if not settings.username or settings.password:
        return settings
    found = _stored_password(ctx, settings) or _ask_password(ctx, settings)
    return dataclasses.replace(settings, password=found)


def _stored_password(ctx: Context, settings: SmtpSettings) -> str | None:
    """The password from the environment, else the OS keyring; None when neither has it."""
    assert settings.username is not None
    return lookup_password(
        settings.username,
        settings.host,
        ctx.env.environ,
        variable=PASSWORD_VARIABLE,
        backend=ctx.env.keyring,
    )


def _password_source(ctx: Context, settings: SmtpSettings) -> None:
    """Refuse, as the send would, when no password can come from anywhere (a dry run)."""
    if _stored_password(ctx, settings) is None:
        _require_prompt(ctx)


def _require_prompt(ctx: Context) -> None:
    if ctx.env.prompt is None and not ctx.env.is_terminal():
        raise SmtpSettingsError(
            "a username is set but no password",
            hint=f"set {PASSWORD_VARIABLE}, store it with `campaign password set`,"
            " or run on a terminal to be asked",
        )


def _ask_password(ctx: Context, settings: SmtpSettings) -> str:
    _require_prompt(ctx)
    return _read_secret(ctx, f"SMTP password for {settings.username} at {settings.host}: ")


def _read_secret(ctx: Context, question: str) -> str:
    """A password typed at the prompt; Ctrl-D (end of input) is a refusal, not a crash."""
    ask = ctx.env.prompt or (lambda text: getpass.getpass(text))
    try:
        return ask(question)
    except EOFError:
        raise UsageError("no password was typed (end of input)") from None


def _require_confirmation_channel(ctx: Context) -> None:
    """A send that must be confirmed needs someone to answer: refused before anything."""
    if ctx.env.prompt is None and not ctx.env.is_terminal():
        raise RunRefused(
            "no terminal to confirm on, so nothing was sent",
            hint="pass --yes to send without confirmation, or --dry-run to see the plan",
        )


def _confirm(ctx: Context, plan: Plan, settings: SmtpSettings, sender: str) -> bool:
    if ctx.args.yes:
        return True
    ask = ctx.env.prompt or input
    try:
        answer = ask(
            f"Send {_plural(len(plan.messages), 'letter', 'letters')} to"
            f" {_plural(plan.address_count, 'address', 'addresses')} from {sender} through"
            f" {settings.describe()}? [y/N] "
        )
    except EOFError:  # Ctrl-D: no answer is not a yes
        return False
    return answer.strip().lower() in ("y", "yes")


# The commands below import their modules when run: `campaign send` of 100,000 letters
# then does not carry the inbox, import and report code (about 2.5 MB of its peak memory).


def run_init(ctx: Context) -> ExitStatus:
    from campaign.starter import init_campaign

    created = init_campaign(ctx.args.folder)
    for path in created:
        ctx.ui.note(f"created {path}")
    file = ctx.args.folder / "recipients.yaml"
    ctx.ui.note(f"Next: edit {file} and the templates, then `campaign --file {file} check`.")
    return ExitStatus.OK


def run_import(ctx: Context) -> ExitStatus:
    from campaign.importing import check_imported, read_recipients_csv

    imported = read_recipients_csv(ctx.args.csv)
    folder = ctx.args.out.parent if ctx.args.out is not None else Path.cwd()
    for notice in check_imported(imported, check_dns=ctx.args.check_dns, folder=folder):
        where = f"{ctx.args.csv}:{notice.line}: " if notice.line else ""
        field = f"{notice.field}: " if notice.field else ""
        ctx.ui.warning(f"{where}{field}{notice.message}")
    if ctx.args.out is not None:
        if ctx.args.out.exists() or ctx.args.out.is_symlink():
            raise UsageError(f"{ctx.args.out} exists; campaign import overwrites nothing")
        write_file(ctx.args.out, imported.yaml.encode("utf-8"))
    else:
        ctx.env.stdout.write(imported.yaml)
    ctx.ui.err.print(
        f"{_plural(imported.count, 'recipient', 'recipients')} imported. Next: put them under"
        " your campaign: section, then `campaign check`.",
        markup=False,
    )
    return ExitStatus.OK


_INBOUND_NAMES: dict[str, tuple[str, str]] = {
    Event.BOUNCE: ("bounce", "bounces"),
    Event.DELAYED: ("delay notice", "delay notices"),
    Event.AUTO_REPLY: ("auto-reply", "auto-replies"),
    Event.REPLY: ("reply", "replies"),
}


def run_inbox(ctx: Context) -> ExitStatus:
    from campaign.inbox import read_inbox
    from campaign.mailsource import (
        imap_messages,
        maildir_messages,
        mbox_messages,
        resolve_imap_settings,
    )

    args = ctx.args
    source = ctx.load(notices=False)
    campaign = source.campaign
    since = args.since
    if since is None:
        first = replay(ctx.log_path, campaign.id).first_attempt
        since = datetime.date.fromisoformat(first[:10]) if first else None
    if args.maildir is not None:
        messages = maildir_messages(args.maildir, since=since)
        where = str(args.maildir)
    elif args.mbox is not None:
        messages = mbox_messages(args.mbox, since=since)
        where = str(args.mbox)
    else:
        settings = resolve_imap_settings(
            ctx.env.environ,
            campaign.imap,
            host=args.imap_host,
            port=args.imap_port,
            folder=args.imap_folder,
        )
        if settings.password is None:
            password = lookup_password(
                settings.username,
                settings.host,
                ctx.env.environ,
                variable="CAMPAIGN_IMAP_PASSWORD",
                backend=ctx.env.keyring,
            )
            if password is None:
                if ctx.env.prompt is None and not ctx.env.is_terminal():
                    raise UsageError(
                        "no IMAP password", hint="set CAMPAIGN_IMAP_PASSWORD, or run on a terminal"
                    )
                password = _read_secret(
                    ctx, f"IMAP password for {settings.username} at {settings.host}: "
                )
            settings = dataclasses.replace(settings, password=password)
        messages = imap_messages(settings, since=since, timeout=args.timeout)
        where = settings.describe()
    report = read_inbox(ctx.log_path, campaign.id, messages, clock=ctx.env.clock)
    found = (
        ", ".join(
            _plural(n, *_INBOUND_NAMES.get(kind, (kind, kind)))
            for kind, n in sorted(report.matched.items())
        )
        or "nothing new"
    )
    ctx.ui.note(
        f"Read {_plural(report.read, 'message', 'messages')} from {where}"
        + (f" since {since}" if since else "")
        + f": recorded {found}; {report.not_matched} not about this campaign,"
        f" {report.already} recorded before"
        + "".join(f", {n} skipped ({why})" for why, n in sorted(report.skipped.items()))
        + "."
    )
    if report.matched:
        ctx.ui.note("Next: `campaign log` shows where each letter stands now.")
    return ExitStatus.OK


def run_report(ctx: Context) -> ExitStatus:
    from campaign.report import build_report, unproven_step
    from campaign.report_page import write_report

    out: Path = ctx.args.out or ctx.outbox / "report.html"
    data = build_report(Options(ctx.file, ctx.args.templates), ctx.log_path, clock=ctx.env.clock)
    write_report(data, out)
    counts = ", ".join(f"{n} {status}" for status, n in data.counts if n)
    ctx.ui.note(
        f"Wrote {out}: {_plural(data.total, 'recipient', 'recipients')} ({counts})."
        " Open it in a browser, or print it to PDF."
    )
    if data.unproven:
        ctx.ui.warning(unproven_step(ctx.log_path.parent / "sent", data.unproven))
    return ExitStatus.OK


def run_password(ctx: Context) -> ExitStatus:
    args = ctx.args
    source = ctx.load()
    settings = resolve_settings(
        ctx.env.environ,
        source.campaign.smtp,
        host=args.smtp_host,
        port=args.smtp_port,
        security=args.security,
    )
    if not settings.username:
        raise UsageError(
            "no SMTP username is set, so there is no password to keep",
            hint="set CAMPAIGN_SMTP_USERNAME (or smtp.username in the file)",
        )
    if args.action == "forget":
        if forget_password(settings.username, settings.host, backend=ctx.env.keyring):
            ctx.ui.note(f"Removed the password for {settings.username} at {settings.host}.")
        else:
            ctx.ui.note(f"No password was stored for {settings.username} at {settings.host}.")
        return ExitStatus.OK
    if not settings.password:  # CAMPAIGN_SMTP_PASSWORD, for a script; else the prompt
        settings = dataclasses.replace(settings, password=_ask_password(ctx, settings))
    ctx.ui.note(_probe(settings, args.timeout))  # stored only once the server took it
    assert settings.password is not None and settings.username is not None
    name = store_password(
        settings.username, settings.host, settings.password, backend=ctx.env.keyring
    )
    ctx.ui.note(f"Stored the password for {settings.username} at {settings.host} in {name}.")
    return ExitStatus.OK


def run_resolve(ctx: Context) -> ExitStatus:
    args = ctx.args
    if bool(args.recipients) == bool(args.status):
        raise UsageError("give recipient ids or --status, one or the other")
    if not args.reason.strip():
        raise UsageError(
            "--reason is empty", hint="say what you checked or fixed: the log keeps it"
        )
    source = ctx.load()
    chosen = source.select(args.recipients) if args.recipients else source.recipients
    settled = resolve(
        ctx.log_path,
        source.campaign.id,
        {r.id: r.addresses for r in chosen},
        settle_as=args.settle_as,
        reason=args.reason,
        by=_who(ctx),
        clock=ctx.env.clock,
        statuses=args.status or (),
    )
    if not settled:
        ctx.ui.note(f"No recipient is {' or '.join(args.status)}; nothing was recorded.")
        return ExitStatus.OK
    ctx.ui.note(f"Recorded {listed(settled)} as {args.settle_as}: {args.reason}")
    if args.settle_as == Status.PENDING:
        ctx.ui.note("Next: `campaign send` sends them again.")
    return ExitStatus.OK


def _who(ctx: Context) -> str:
    """Who settled it, for the record: the account and the machine."""
    user = ctx.env.environ.get("USER") or ctx.env.environ.get("LOGNAME") or "unknown user"
    return f"{user}@{socket.gethostname()}"


def run_log(ctx: Context) -> ExitStatus:
    args = ctx.args
    path = ctx.log_path
    if args.history and args.csv:
        raise UsageError("--history gives a table, or JSON with --json; not CSV")
    if args.follow and (args.json or args.csv):
        raise UsageError("--follow keeps a table live; --json and --csv are for a finished log")
    options = Options(ctx.file, args.templates)
    if args.follow:
        campaign_id, entries = load_roster(options)
    else:
        campaign_id, entries, history = load_roster_and_log(options, path)
    known = {entry.id for entry in entries}
    if args.history and not args.follow:
        known.update(gone_from_the_file(entries, history))  # what a removed id was sent
    require_known(
        [*(args.recipient or ()), *([args.history] if args.history else [])], known, ctx.file
    )
    if args.follow:

        def review_of(follower: LogFollower) -> Review:
            return build_review(campaign_id, entries, path, follower.history)

        follow(
            ctx.ui,
            LogFollower(path),
            review_of,
            (args.status or (), args.recipient or ()),
            interval=args.interval,
            stamp=lambda: ctx.env.clock().strftime("%H:%M:%S"),
        )
        return ExitStatus.OK
    review = build_review(campaign_id, entries, path, history)
    if args.history:
        events = list(history_of(path, args.history))
        if args.json:
            for event in events:
                ctx.env.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
            return ExitStatus.OK
        if events:
            show_history(ctx.ui, args.history, events)
        if not any(event.get("event") == "attempt" for event in events):
            ctx.ui.note(f"{args.history} has not been attempted yet")
        return ExitStatus.OK
    rows = review.filtered(args.status or (), args.recipient or (), replied=args.replied)
    if args.json:
        for line in as_json_lines(rows):
            ctx.env.stdout.write(line + "\n")
    elif args.csv:
        write_csv(ctx.env.stdout, rows)
    else:
        show_review(ctx.ui, review, rows)
    for note in review.notes if (args.json or args.csv) else ():
        ctx.ui.err.print(f"note: {visible(note)}", markup=False)
    return ExitStatus.OK


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run one command; return its exit status. User mistakes print a message, no traceback."""
    env = env or Environment()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM ends a run like Ctrl-C: open attempts stay in the log, read as unknown.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _main(argv, env)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None, env: Environment) -> int:
    width = env.width or columns_from(env.environ)
    ui = Ui(env.stdout, env.stderr, terminal=env.is_terminal(), width=width)
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(env.stdout), contextlib.redirect_stderr(env.stderr):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) else ExitStatus.BAD_INPUT
    handler: Callable[[Context], ExitStatus] | None = args.handler
    if handler is None:  # a bare `campaign`: what it can do
        parser.print_help(env.stdout)
        return int(ExitStatus.OK)
    try:
        return int(handler(Context(args, env, ui)))
    except CampaignError as err:
        ui.error(err)
        return int(ExitStatus.BAD_INPUT)
    except KeyboardInterrupt:
        ui.err.print(
            "[red]interrupted[/]: nothing recorded is lost; if a letter was on its way at that"
            " moment, it is recorded as unknown. `campaign log` shows where each letter stands,"
            " and `campaign send` goes on from there."
        )
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`campaign log --csv | head -1`): stop writing, quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, env.stdout.fileno())
        return int(ExitStatus.OK)
