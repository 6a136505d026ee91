"""The command line: parse arguments, call the library, print through `ui`, map errors to exits."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO

from campaign import __version__
from campaign.drafts import write_drafts
from campaign.errors import CampaignError, ValidationErrors
from campaign.loading import Options, load_campaign
from campaign.models import CampaignFile
from campaign.prepare import Clock, Prepared, prepare, utc_now
from campaign.store import MessageStore
from campaign.transports.memory import MemoryTransport
from campaign.ui import Ui


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

    def is_terminal(self) -> bool:
        if self.terminal is not None:
            return self.terminal
        return bool(self.stdin.isatty() and self.stdout.isatty())


EXAMPLES = {
    "check": "campaign check\n  campaign --file other/recipients.yaml check --check-dns",
    "preview": "campaign preview president\n  campaign preview --html ombudsman",
    "drafts": "campaign drafts\n  campaign drafts --outbox /tmp/review",
}


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--file", type=Path, default=default if suppress else Path("recipients.yaml"),
        help="the campaign file (default: recipients.yaml)",
    )
    parser.add_argument(
        "--templates", type=Path, default=default,
        help="the templates folder (default: templates/ beside the file)",
    )
    parser.add_argument(
        "--outbox", type=Path, default=default,
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {EXAMPLES[name]}",
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
    return parser


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

    def load(self, *, check_dns: bool = False) -> CampaignFile:
        return load_campaign(Options(self.file, self.args.templates, check_dns=check_dns))


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
        _show_all(prepared, terminal)
    ctx.ui.note(f"{len(prepared.drafts)} message(s) shown; nothing was written or sent.")
    return ExitStatus.OK


def _show_all(prepared: Prepared, terminal: MemoryTransport) -> None:
    import asyncio

    async def show() -> None:
        for draft in prepared.drafts:
            await terminal.send(draft, prepared.data(draft), draft.addresses)

    asyncio.run(show())


def run_drafts(ctx: Context) -> ExitStatus:
    source = ctx.load()
    with MessageStore() as store:
        prepared = prepare(source, source.recipients, store, clock=ctx.env.clock)
        report = write_drafts(prepared, ctx.outbox)
    ctx.ui.drafts_report(report, ctx.outbox)
    return ExitStatus.OK


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run one command; return its exit status. User mistakes print a message, no traceback."""
    env = env or Environment()
    ui = Ui(env.stdout, env.stderr, terminal=env.is_terminal())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) else ExitStatus.BAD_INPUT
    handler: Callable[[Context], ExitStatus] = args.handler
    try:
        return int(handler(Context(args, env, ui)))
    except CampaignError as err:
        ui.error(err)
        return int(ExitStatus.BAD_INPUT)
    except KeyboardInterrupt:
        ui.err.print("[red]interrupted[/]")
        return int(ExitStatus.INTERRUPTED)
