"""Everything the terminal shows: reports, previews, tables and errors, through rich."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from campaign.drafts import DraftsReport
from campaign.errors import CampaignError, ValidationErrors
from campaign.models import CampaignFile, Draft

PREVIEW_HEADERS = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID")


class Ui:
    """Rich consoles on the given streams; plain text when they are not terminals."""

    def __init__(self, stdout: IO[str], stderr: IO[str], *, terminal: bool) -> None:
        width = None if terminal else 120
        self.out = Console(file=stdout, force_terminal=terminal, width=width, highlight=False)
        self.err = Console(file=stderr, force_terminal=terminal, width=width, highlight=False)
        self.terminal = terminal

    def error(self, err: CampaignError) -> None:
        if isinstance(err, ValidationErrors):
            self.err.print(f"[bold red]error:[/] {escape(err.message)}")
            for problem in err.errors:
                self.err.print(f"  [red]-[/] {escape(str(problem))}")
        else:
            self.err.print(f"[bold red]error:[/] {escape(str(err))}")

    def note(self, text: str) -> None:
        self.out.print(escape(text))

    def check_report(
        self, source: CampaignFile, problems: Sequence[CampaignError] = ()
    ) -> None:
        campaign = source.campaign
        self.out.print(
            f"[bold]{escape(campaign.id)}[/]: {len(source.recipients)} recipients,"
            f" {sum(len(r.mailboxes) for r in source.recipients)} addresses,"
            f" from {escape(campaign.sender.address)} ({escape(str(campaign.source))})"
        )
        failing = {p.recipient for p in problems if p.recipient}
        warned = {n.recipient for n in source.notices}
        table = Table(show_lines=False)
        for column in ("#", "id", "name", "addresses", "status"):
            table.add_column(column, overflow="fold")
        for recipient in source.recipients:
            if recipient.id in failing:
                status = Text("error", style="bold red")
            elif recipient.id in warned:
                status = Text("warning", style="yellow")
            else:
                status = Text("ok", style="green")
            table.add_row(
                str(recipient.index),
                Text(recipient.id),
                Text(recipient.name),
                Text("\n".join(recipient.addresses)),
                status,
            )
        self.out.print(table)
        for notice in source.notices:
            where = f"{notice.recipient}: " if notice.recipient else ""
            self.out.print(f"[yellow]warning:[/] {escape(where + notice.message)}")
        if campaign.sender.domain in ("example.org", "example.com", "example.net"):
            self.out.print(
                f"[yellow]warning:[/] the sender {escape(campaign.sender.address)} is a"
                f" placeholder; set campaign.from in {escape(campaign.source.name)} before sending"
            )

    def preview(self, draft: Draft, data: bytes, *, html: bool) -> None:
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        header_lines = Text()
        for name in PREVIEW_HEADERS:
            value = message.get(name)
            if value is not None:
                header_lines.append(f"{name}: ", style="bold")
                header_lines.append(f"{value}\n")
        header_lines.append("Envelope: ", style="bold")
        header_lines.append(f"{draft.sender} -> {', '.join(draft.addresses)}")
        body = message.get_body(preferencelist=("html",) if html else ("plain",))
        content = body.get_content() if body is not None else "(no such part)"
        self.out.print(
            Panel(header_lines, title=Text(draft.filename), title_align="left", expand=True)
        )
        self.out.print(Text(str(content)), soft_wrap=True)

    def drafts_report(self, report: DraftsReport, outbox: Path) -> None:
        count = len(report.written)
        self.out.print(f"Wrote {count} draft{'s' if count != 1 else ''} to {escape(str(outbox))}:")
        for path in report.written:
            self.out.print(f"  {escape(path.name)}")
        if report.replaced:
            self.out.print(
                f"Replaced {len(report.replaced)} existing draft"
                f"{'s' if len(report.replaced) != 1 else ''} of the same name."
            )
        if report.removed:
            self.out.print(
                f"Removed {len(report.removed)} draft(s) of recipients no longer in the file: "
                + escape(", ".join(report.removed))
            )
        self.out.print(
            "Open them in your mail program to review; `campaign send --from-outbox` sends"
            " exactly these files."
        )

    def lines(self, rows: Iterable[str]) -> None:
        for row in rows:
            self.out.print(escape(row))
