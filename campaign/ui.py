"""Everything the terminal shows: reports, previews, tables and errors, through rich."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import IO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from campaign.addresses import DomainResult, placeholder_reason
from campaign.display import visible
from campaign.drafts import EDITED_FOLDER, DraftsReport
from campaign.errors import CampaignError, ValidationErrors
from campaign.models import Attachment, CampaignFile, Draft
from campaign.review import DryRunRow, LogFollower, RecipientRow, Review, SummaryRow
from campaign.sendlog import Outcome, Status

TABLE_LIMIT = 200
PREVIEW_HEADERS = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "Content-Language")


def safe(text: str) -> str:
    """Text from a file, a log or a server inside rich markup: controls escaped, no markup."""
    return escape(visible(text, keep_newlines=True))


def plain(text: str) -> Text:
    """Text from a file, a log or a server as a rich Text: controls escaped."""
    return Text(visible(text, keep_newlines=True))


def file_size(size: int) -> str:
    """`812 bytes`, `195.3 KiB`, `2.4 MiB`."""
    if size < 1024:
        return f"{size:,} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 2**20:.1f} MiB"


def attachment_list(attachments: Sequence[Attachment], separator: str = ", ") -> str:
    """`letter.pdf (195.3 KiB), annex/map.png (12.0 KiB)`: as the file names them."""
    return separator.join(f"{visible(a.written)} ({file_size(a.size)})" for a in attachments)


@dataclass(frozen=True, slots=True)
class _CheckColumns:
    """The columns `check` adds when the campaign needs them."""

    languages: bool  # more than one language
    attachments: bool  # some recipient has files of their own


def columns_from(environ: Mapping[str, str]) -> int | None:
    """The width `COLUMNS` asks for (`COLUMNS=80 campaign log > file`), if it is a sane one."""
    value = environ.get("COLUMNS", "").strip()
    return (
        int(value) if value.isascii() and value.isdigit() and 20 <= int(value) <= 10_000 else None
    )


class Ui:
    """Rich consoles on the given streams; plain text when they are not terminals."""

    def __init__(
        self, stdout: IO[str], stderr: IO[str], *, terminal: bool, width: int | None = None
    ) -> None:
        width = width or (None if terminal else 120)
        self.out = Console(file=stdout, force_terminal=terminal, width=width, highlight=False)
        self.err = Console(file=stderr, force_terminal=terminal, width=width, highlight=False)
        self.terminal = terminal

    def error(self, err: CampaignError) -> None:
        if isinstance(err, ValidationErrors):
            self.err.print(f"[bold red]error:[/] {safe(err.message)}")
            for problem in err.errors:
                self.err.print(f"  [red]-[/] {safe(str(problem))}")
        else:
            self.err.print(f"[bold red]error:[/] {safe(str(err))}")

    def note(self, text: str) -> None:
        self.out.print(safe(text))

    def warning(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/] {safe(text)}")

    def problem(self, text: str, hint: str) -> None:
        """A run that stopped part way: what happened and what to do, not a crash."""
        self.err.print(f"[bold red]stopped:[/] {safe(text)}")
        self.err.print(f"  {safe(hint)}")

    def dns_progress(self, done: int, total: int, result: DomainResult) -> None:
        """One line per domain as DNS answers (`check --check-dns`), on stderr."""
        self.err.print(
            f"checking domains {done}/{total}: {safe(result.domain)} {result.status}"
            + (f" ({safe(result.reason)})" if result.reason else ""),
            markup=False,
        )

    def notices(self, source: CampaignFile) -> None:
        """Every warning `check` gives about the file (likely typos, unchecked domains)."""
        for notice in source.notices:
            where = f"{notice.recipient}: " if notice.recipient else ""
            self.out.print(f"[yellow]warning:[/] {safe(where + notice.message)}")

    def check_report(self, source: CampaignFile, problems: Sequence[CampaignError] = ()) -> None:
        campaign = source.campaign
        self.out.print(
            f"[bold]{safe(campaign.id)}[/]: {len(source.recipients)} recipients,"
            f" {sum(len(r.addresses) for r in source.recipients)} addresses,"
            f" from {safe(campaign.sender.address)} ({safe(str(campaign.source))})"
        )
        if campaign.attachments:
            total = sum(a.size for a in campaign.attachments)
            self.out.print(
                f"attached to every letter: {escape(attachment_list(campaign.attachments))}"
                + (f", {file_size(total)} in all" if len(campaign.attachments) > 1 else "")
            )
        failing = {p.recipient for p in problems if p.recipient}
        failing.update(r for p in problems for r in p.recipients)
        warned = {n.recipient for n in source.notices}
        columns = _CheckColumns(
            languages=len({campaign.language_of(r) for r in source.recipients}) > 1,
            attachments=any(r.attachments for r in source.recipients),
        )
        if len(source.recipients) > TABLE_LIMIT:
            self._plain_rows(source, failing, warned, columns)
        else:
            self._table_rows(source, failing, warned, columns)
        self.notices(source)
        reason = placeholder_reason(campaign.sender.address)
        if reason:
            self.out.print(
                f"[yellow]warning:[/] the sender {safe(campaign.sender.address)} is a"
                f" placeholder ({safe(reason)}); set campaign.from in"
                f" {safe(campaign.source.name)}: `campaign send` refuses it"
            )

    def _plain_rows(
        self,
        source: CampaignFile,
        failing: Collection[str | None],
        warned: Collection[str | None],
        columns: _CheckColumns,
    ) -> None:
        """Too many rows for a drawn table to be quick: aligned plain lines, one per recipient."""
        width = max(len(r.id) for r in source.recipients)
        campaign = source.campaign
        languages = max((len(campaign.language_of(r)) for r in source.recipients), default=0)
        write = self.out.file.write
        language_head = f"{'language':<{languages}}  " if columns.languages else ""
        files_head = "  [own attachments]" if columns.attachments else ""
        write(
            f"{'#':>7}  {'id':<{width}}  {'status':<7}  {language_head}name  <addresses>"
            f"{files_head}\n"
        )
        lines: list[str] = []
        for recipient in source.recipients:
            language = (
                f"{campaign.language_of(recipient):<{languages}}  " if columns.languages else ""
            )
            files = (
                f"  [{attachment_list(recipient.attachments)}]"
                if columns.attachments and recipient.attachments
                else ""
            )
            status = (
                "error"
                if recipient.id in failing
                else "warning"
                if recipient.id in warned
                else "ok"
            )
            lines.append(
                f"{recipient.index:>7}  {recipient.id:<{width}}  {status:<7}  {language}"
                f"{visible(recipient.name)}  <{visible(', '.join(recipient.addresses))}>{files}\n"
            )
            if len(lines) == 1000:  # written as it goes: a long file is not held twice
                write("".join(lines))
                lines.clear()
        write("".join(lines))

    def _table_rows(
        self,
        source: CampaignFile,
        failing: Collection[str | None],
        warned: Collection[str | None],
        columns: _CheckColumns,
    ) -> None:
        table = Table(show_lines=False)
        headings = ["#", "id", "name", "addresses"]
        headings += ["language"] * columns.languages + ["own attachments"] * columns.attachments
        for column in (*headings, "status"):
            table.add_column(column, overflow="fold")
        for recipient in source.recipients:
            extra = [plain(source.campaign.language_of(recipient))] * columns.languages
            if columns.attachments:
                extra.append(plain(attachment_list(recipient.attachments, "\n")))
            if recipient.id in failing:
                status = Text("error", style="bold red")
            elif recipient.id in warned:
                status = Text("warning", style="yellow")
            else:
                status = Text("ok", style="green")
            table.add_row(
                str(recipient.index),
                plain(recipient.id),
                plain(recipient.name),
                plain("\n".join(recipient.addresses)),
                *extra,
                status,
            )
        self.out.print(table)

    def preview(self, draft: Draft, data: bytes, *, html: bool) -> None:
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        header_lines = Text()
        for name in PREVIEW_HEADERS:
            value = message.get(name)
            if value is not None:
                header_lines.append(f"{name}: ", style="bold")
                header_lines.append(f"{visible(str(value))}\n")
        header_lines.append("Envelope: ", style="bold")
        header_lines.append(visible(f"{draft.sender} -> {', '.join(draft.addresses)}"))
        for attachment in message.iter_attachments():
            payload = attachment.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            header_lines.append("\nAttached: ", style="bold")
            header_lines.append(
                visible(
                    f"{attachment.get_filename()} ({attachment.get_content_type()}, {size:,} bytes)"
                )
            )
        body = message.get_body(preferencelist=("html",) if html else ("plain",))
        content = body.get_content() if body is not None else "(no such part)"
        content = str(content).replace("\r\n", "\n")  # the wire's line ends, shown as lines
        self.out.print(
            Panel(header_lines, title=plain(draft.filename), title_align="left", expand=True)
        )
        self.out.print(plain(str(content)), soft_wrap=True)

    def drafts_report(self, report: DraftsReport, outbox: Path) -> None:
        count = len(report.written)
        self.out.print(f"Wrote {count} draft{'s' if count != 1 else ''} to {safe(str(outbox))}:")
        for path in report.written:
            self.out.print(f"  {safe(path.name)}")
        if report.replaced:
            self.out.print(
                f"Replaced {len(report.replaced)} existing draft"
                f"{'s' if len(report.replaced) != 1 else ''} of the same name."
            )
        if report.kept_edited:
            self.out.print(
                f"Kept {len(report.kept_edited)} draft(s) changed since campaign wrote them"
                " (by hand, or by an older version of campaign), as they were, in "
                + safe(str(outbox / EDITED_FOLDER))
                + ": "
                + safe(", ".join(report.kept_edited))
            )
        if report.removed:
            self.out.print(
                f"Removed {len(report.removed)} draft(s) of recipients no longer in the file: "
                + safe(", ".join(report.removed))
            )
        if report.left_alone:
            self.out.print(
                f"Left alone {len(report.left_alone)} other .eml file(s) campaign did not write: "
                + safe(", ".join(visible(name) for name in report.left_alone))
            )
        self.out.print(
            "Open them in your mail program to review; `campaign send --from-outbox` sends"
            " exactly these files."
        )


STATUS_STYLES = {
    Status.SENT: "green",
    Status.PARTIAL: "yellow",
    Status.DEFERRED: "yellow",
    Status.FAILED: "red",
    Status.UNKNOWN: "magenta",
    Status.PENDING: "dim",
    Status.SENDING: "cyan",
    Status.BOUNCED: "red",
    Outcome.ACCEPTED: "green",
    Outcome.REFUSED: "red",
    "retrying": "yellow",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


class PlainProgress:
    """No terminal: one line at the end."""

    def __init__(self, ui: Ui) -> None:
        self.ui = ui
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.started = 0.0

    def start(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()

    def update(self, recipient: str, status: str) -> None:
        if status != "retrying":
            self.counts[status] += 1

    def pace(self, change: str, pace: str) -> None:
        """Each change of pace on a line of its own, as it happens."""
        self.ui.out.print(f"pace: {safe(change)} (now {safe(pace)})")

    def finish(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = sum(self.counts.values())
        parts = ", ".join(f"{count} {status}" for status, count in sorted(self.counts.items()))
        self.ui.out.print(
            f"{done}/{self.total} letters done in {elapsed:.1f} s"
            f" ({done * 60 / elapsed:,.0f}/min): {parts or 'none'}"
        )


class RichProgress(PlainProgress):
    """A live bar: sent / failed / retrying, and the rate."""

    def __init__(self, ui: Ui) -> None:
        super().__init__(ui)
        self.retrying = 0
        self.current_pace = ""
        self.bar = Progress(
            TextColumn("[bold]sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[summary]}"),
            TimeElapsedColumn(),
            console=ui.out,
            transient=False,
        )
        self.task: TaskID | None = None

    def pace(self, change: str, pace: str) -> None:
        self.current_pace = f"{change}"
        self.bar.console.print(f"[dim]pace:[/] {safe(change)} (now {safe(pace)})")

    def start(self, total: int) -> None:
        super().start(total)
        self.bar.start()
        self.task = self.bar.add_task("send", total=total, summary="")

    def update(self, recipient: str, status: str) -> None:
        super().update(recipient, status)
        if status == "retrying":
            self.retrying += 1
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = sum(self.counts.values())
        summary = (
            f"[green]{self.counts['sent']} sent[/] [red]{self.counts['failed']} failed[/]"
            f" [yellow]{self.retrying} retries[/] {done * 60 / elapsed:,.0f}/min"
        )
        if self.task is not None:
            self.bar.update(self.task, completed=done, summary=summary)

    def finish(self) -> None:
        self.bar.stop()
        super().finish()


def show_plan(ui: Ui, lines: Iterable[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in lines:
        table.add_row(label, plain(value))
    ui.out.print(table)


def show_dry_run(ui: Ui, rows: Sequence[DryRunRow]) -> None:
    """Each recipient, the addresses a send would try and those it would skip, and why."""
    for row in rows:
        tried = ", ".join(row.to_try) if row.to_try else "nothing"
        ui.out.print(f"{safe(row.recipient)} ({row.status}): would try {safe(tried)}")
        for address, why in row.skipped:
            ui.out.print(f"    skips {safe(address)}: {safe(why)}")


def show_summary(ui: Ui, rows: Sequence[SummaryRow], left_out: int) -> None:
    if rows and not ui.terminal:
        # Not a terminal (a pipe, a file, a CI log): one line per address, never folded.
        ui.out.print("send summary", markup=False)
        for row in rows:
            for line in row.replies or (", ".join(row.addresses),):
                ui.out.print(
                    visible(f"{row.recipient}  {row.status}  {line}"), markup=False, soft_wrap=True
                )
    elif rows:
        table = Table(title="send summary")
        for column in ("recipient", "status", "addresses", "server's reply"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(
                plain(row.recipient),
                status_text(row.status),
                plain(", ".join(row.addresses)),
                plain("\n".join(row.replies)),
            )
        ui.out.print(table)
    if left_out and not rows:
        ui.out.print(f"All {left_out} letters were accepted; `campaign log` lists them.")
    elif left_out:
        ui.out.print(f"{left_out} more not listed; `campaign log` lists every recipient.")


WIDE = 120  # from this width on, the review also shows names and addresses
ANSWERS_WIDTH = 100  # narrower still, a replies column would squeeze the id and status


def review_table(review: Review, rows: Sequence[RecipientRow], width: int = WIDE) -> Table:
    """One recipient per row. Narrower than WIDE: id, status, tries, when and the reply cut
    to fit, each recipient on one line (`--history ID` shows everything)."""
    counts = review.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in Status if counts[s])
    wide = width >= WIDE
    table = Table(
        title=f"{review.campaign}: {summary or 'no recipients'}",
        box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,
        pad_edge=wide,
        expand=not wide,
    )
    # Narrow, the id, status, tries and time keep their width; the reply takes what is left.
    longest_id = max((len(row.recipient) for row in rows), default=2)
    table.add_column("id", no_wrap=True, min_width=None if wide else min(longest_id, 32))
    if wide:
        table.add_column("name / organisation", overflow="fold", ratio=2)
        table.add_column("addresses", overflow="fold", ratio=2)
    table.add_column("status", no_wrap=True, min_width=8)
    table.add_column("tries", justify="right", no_wrap=True, min_width=5)
    if wide:
        table.add_column("last reply", overflow="fold", ratio=3)
        table.add_column("last event (UTC)", no_wrap=True)
        table.add_column("replies", no_wrap=True)
    else:
        answered = width >= ANSWERS_WIDTH and any(row.replies or row.auto_replies for row in rows)
        table.add_column("when (UTC)", no_wrap=True, min_width=11)
        table.add_column("last reply", no_wrap=True, overflow="ellipsis", ratio=1)
        if answered:
            table.add_column("replies", no_wrap=True, overflow="ellipsis", max_width=20)
    for row in rows:
        reply = f"{row.last_code} {row.last_reply}" if row.last_code is not None else row.last_reply
        if not wide:
            cells: list[Text | str] = [
                plain(row.recipient),
                status_text(row.status),
                str(row.attempts),
                plain(row.time[5:16].replace("T", " ")),
                plain(" ".join(reply.split())),
            ]
            if answered:
                cells.append(plain(_answers(row, ", ")))
            table.add_row(*cells)
            continue
        outcomes = {a.outcome for a in row.addresses}
        address_lines = Text()
        for position, address in enumerate(row.addresses):
            if position:
                address_lines.append("\n")
            address_lines.append(visible(address.address))
            if len(outcomes) > 1:
                code = f" {address.code}" if address.code is not None else ""
                address_lines.append(
                    f" ({address.outcome}{code})", style=STATUS_STYLES.get(address.outcome, "")
                )
        name = plain(row.name)
        if row.organisation:
            name.append(f"\n{visible(row.organisation)}", style="dim")
        table.add_row(
            plain(row.recipient),
            name,
            address_lines,
            status_text(row.status),
            str(row.attempts),
            plain(reply),
            plain(row.time[:19].replace("T", " ")),
            plain(_answers(row)),
        )
    return table


def _answers(row: RecipientRow, separator: str = "\n") -> str:
    """`1 (2017-10-25)`: a person's replies and the latest date; automatic ones apart."""
    parts = []
    if row.replies:
        parts.append(f"{row.replies} ({(row.last_answer or '')[:10]})")
    if row.auto_replies:
        parts.append(f"{row.auto_replies} automatic")
    return separator.join(parts)


def _wrapped(items: Sequence[tuple[str, str]], width: int, separator: str) -> str:
    """Styled items joined on lines of at most `width`, never breaking an item in two."""
    lines: list[list[str]] = [[]]
    used = 0
    for text, style in items:
        extra = len(text) + (len(separator) if lines[-1] else 0)
        if lines[-1] and used + extra > width:
            lines.append([])
            used, extra = 0, len(text)
        lines[-1].append(f"[{style}]{escape(text)}[/]")
        used += extra
    return "\n".join(separator.join(line) for line in lines)


def show_review(ui: Ui, review: Review, rows: Iterable[RecipientRow]) -> None:
    counts = review.counts()
    ui.out.print(
        f"[bold]campaign[/] {safe(review.campaign)}   [bold]log[/] {safe(str(review.log_path))}"
    )
    ui.out.print(
        _wrapped([(f"{counts[s]} {s}", STATUS_STYLES[s]) for s in Status], ui.out.width, "  ")
        + (f"   (a run is in progress: {safe(review.live)})" if review.live else "")
    )
    for note in review.notes:
        ui.out.print(f"[yellow]note:[/] {safe(note)}")
    tests = review.test_sends()
    if tests:
        ui.out.print(
            f"test sends: {tests} (--test-to), shown apart and never counted as sent;"
            " `campaign log --history ID` lists them"
        )
    rows = iter(rows)
    first = list(itertools.islice(rows, TABLE_LIMIT + 1))
    if len(first) <= TABLE_LIMIT:
        ui.out.print(review_table(review, first, ui.out.width))
    else:
        _plain_review_rows(ui, itertools.chain(first, rows))
    for step in review.next_steps():
        ui.out.print(f"next: {safe(step)}")


def _plain_review_rows(ui: Ui, rows: Iterable[RecipientRow]) -> None:
    """Too many rows for a drawn table to be quick: one plain line per recipient, streamed."""
    write = ui.out.file.write
    write("id\tstatus\ttries\tlast event (UTC)\tlast reply\tname\torganisation\taddresses\n")
    for row in rows:
        outcomes = {a.outcome for a in row.addresses}
        addresses = ", ".join(
            f"{a.address} ({a.outcome})" if len(outcomes) > 1 else a.address for a in row.addresses
        )
        reply = f"{row.last_code} {row.last_reply}" if row.last_code is not None else row.last_reply
        when = row.time[:19].replace("T", " ")
        fields = (row.recipient, row.status, str(row.attempts), when, reply, row.name)
        write("\t".join(visible(f) for f in (*fields, row.organisation, addresses)) + "\n")


def _history_detail(record: dict[str, object]) -> str:
    """What one event says: each address's outcome and reply, the Message-ID, a settlement."""
    lines = []
    replies = record.get("replies")
    if isinstance(replies, dict):
        for address, reply in replies.items():
            if isinstance(reply, dict):
                code = f" {reply.get('code')}" if reply.get("code") is not None else ""
                lines.append(f"{address}: {reply.get('outcome')}{code} {reply.get('reply')}")
    if record.get("event") == "resolve":
        lines.append(f"as {record.get('as')}: {record.get('reason')}")
        if record.get("by"):
            lines.append(f"by {record.get('by')}")
    if record.get("event") == "attempt" and record.get("message_id"):
        lines.append(f"Message-ID {record.get('message_id')}")
    if record.get("event") in ("bounce", "delayed", "reply", "auto-reply"):
        if record.get("address"):
            lines.append(f"{record.get('address')}")
        if record.get("status") or record.get("diagnostic"):
            lines.append(f"{record.get('status') or ''} {record.get('diagnostic') or ''}".strip())
        lines.append(f"from {record.get('from')}: {record.get('subject')}")
        lines.append(f"dated {record.get('inbound_date')}, kept as {record.get('archive')}")
    if record.get("sha256") and record.get("event") in ("result", "resolve"):
        lines.append(f"SHA-256 {record.get('sha256')}")
    return "\n".join(lines)


def show_history(ui: Ui, recipient: str, records: Iterable[dict[str, object]]) -> int:
    """Every event of one recipient, in order; test sends marked as such."""
    table = Table(title=f"history of {recipient}")
    for column in ("time", "event", "attempt", "addresses", "outcome / reply", "run"):
        table.add_column(column, overflow="fold")
    count = 0
    for record in records:
        count += 1
        event = str(record.get("event", ""))
        if record.get("test"):
            event += " (test)"
        addresses = record.get("addresses")
        table.add_row(
            plain(str(record.get("time", ""))[:23].replace("T", " ")),
            plain(event),
            plain(str(record.get("attempt", ""))),
            plain("\n".join(str(a) for a in addresses) if isinstance(addresses, list) else ""),
            plain(_history_detail(record)),
            plain(str(record.get("run", ""))),
        )
    ui.out.print(table)
    return count


def follow(
    ui: Ui,
    follower: LogFollower,
    review_of: Callable[[LogFollower], Review],
    filters: tuple[Sequence[str], Sequence[str]],
    *,
    interval: float,
    stamp: Callable[[], str],
) -> None:
    """Refresh the table as the log grows, until interrupted (Ctrl-C)."""
    last_counts: dict[Status, int] | None = None
    live = None
    if ui.terminal:
        live = Live(console=ui.out, auto_refresh=False)
        live.start()
    try:
        while True:
            follower.poll()
            review = review_of(follower)
            if live is not None:
                table = review_table(review, list(review.filtered(*filters)), ui.out.width)
                live.update(table, refresh=True)
            else:
                counts = dict(review.counts())
                if counts != last_counts:
                    last_counts = counts
                    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                    ui.out.print(f"{stamp()} {parts}", markup=False)
                    ui.out.file.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
