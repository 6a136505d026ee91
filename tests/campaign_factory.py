"""Helpers for the offline tests: campaigns written into tmp_path, the CLI run in-process."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from campaign.cli import Environment, main

REPO = Path(__file__).resolve().parent.parent
FIXED_NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

# A small valid campaign: two recipients, a text template; the base for the bad-input tests.
GOOD_YAML = """\
campaign:
  id: "small-test"
  subject: "A letter for {{ recipient.name }}"
  from: "Test Sender <sender@example.org>"
recipients:
  - id: "alice"
    name: "Alice Example"
    emails: ["alice@example.com"]
  - id: "bob"
    name: "Bob Example"
    emails: ["bob@example.net"]
"""
GOOD_TEXT = "Dear {{ recipient.name }},\n\nThis is the letter.\n"


@dataclass(frozen=True)
class Run:
    """What one in-process CLI run returned and printed."""

    status: int
    stdout: str
    stderr: str
    prompts: tuple[str, ...] = ()  # what the command asked, when it was given a prompt

    @property
    def out(self) -> str:
        """stdout with rich's line wrapping undone (runs of whitespace become one space)."""
        return " ".join(self.stdout.split())

    @property
    def err(self) -> str:
        """stderr with rich's line wrapping undone (runs of whitespace become one space)."""
        return " ".join(self.stderr.split())


def run_cli(*argv: str | Path, clock: datetime = FIXED_NOW) -> Run:
    """Run `campaign ARGV` in-process with a fixed clock, captured streams, no terminal."""
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment(stdout=stdout, stderr=stderr, environ={}, terminal=False, clock=lambda: clock)
    status = main([str(arg) for arg in argv], env)
    return Run(status, stdout.getvalue(), stderr.getvalue())


def write_campaign(
    folder: Path,
    yaml_text: str,
    text_template: str | None = GOOD_TEXT,
    html_template: str | None = None,
    *,
    template: str = "letter",
) -> Path:
    """Write recipients.yaml and templates/<template>.{txt,html}.j2; return the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    templates = folder / "templates"
    templates.mkdir(exist_ok=True)
    if text_template is not None:
        (templates / f"{template}.txt.j2").write_text(text_template, encoding="utf-8")
    if html_template is not None:
        (templates / f"{template}.html.j2").write_text(html_template, encoding="utf-8")
    path = folder / "recipients.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    return path


def copy_bundled(folder: Path) -> Path:
    """Copy the repository's recipients.yaml and templates/ into `folder`; return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "recipients.yaml", folder / "recipients.yaml")
    shutil.copytree(REPO / "templates", folder / "templates")
    return folder / "recipients.yaml"


def parse_eml(data: bytes | Path) -> EmailMessage:
    """A draft parsed back with the modern policy."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in `folder` (names, hidden ones too) with its bytes."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def yaml_quote(text: str) -> str:
    """`text` as a YAML double-quoted scalar that reads back exactly, controls included."""
    out: list[str] = []
    for char in text:
        code = ord(char)
        if 0x20 <= code < 0x7F and char not in '"\\':
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Refusal:
    """A bad-input run against a folder whose outbox already held drafts."""

    run: Run
    path: Path
    outbox_before: dict[str, bytes]
    outbox_after: dict[str, bytes]


def refuse_over_existing_outbox(
    folder: Path,
    bad_yaml: str | None,
    *,
    text_template: str | None = None,
    html_template: str | None = None,
    before_run: Callable[[Path], object] | None = None,
    file: Path | None = None,
    command: tuple[str, ...] = ("drafts",),
) -> Refusal:
    """Write drafts from the good campaign, then swap in the bad input and run `command`.

    `bad_yaml=None` keeps the good file; a template given replaces the good one;
    `before_run(folder)` may break anything else; `file` runs against another path.
    """
    path = write_campaign(folder, GOOD_YAML)
    first = run_cli("--file", path, "drafts")
    assert first.status == 0, first.stderr
    outbox = folder / "outbox"
    before = snapshot(outbox)
    assert len(before) == 2
    if bad_yaml is not None:
        path.write_text(bad_yaml, encoding="utf-8")
    if text_template is not None:
        (folder / "templates" / "letter.txt.j2").write_text(text_template, encoding="utf-8")
    if html_template is not None:
        (folder / "templates" / "letter.html.j2").write_text(html_template, encoding="utf-8")
    if before_run is not None:
        before_run(folder)
    run = run_cli("--file", file or path, *command)
    return Refusal(run, path, before, snapshot(outbox))


def assert_clean_refusal(refusal: Refusal) -> str:
    """Exit 2, a message and no traceback, the outbox byte-for-byte as it was; the message."""
    run = refusal.run
    assert run.status == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert run.err.startswith("error:")
    assert refusal.outbox_after == refusal.outbox_before
    return run.err


BUNDLED_IDS = (
    "president",
    "general-prosecutor",
    "national-security-committee",
    "ministry-of-internal-affairs",
    "ministry-of-justice",
    "ombudsman",
)
BUNDLED_FILES = tuple(f"{n:02d}-{rid}.eml" for n, rid in enumerate(BUNDLED_IDS, 1))


def draft_bundled(folder: Path, clock: datetime = FIXED_NOW) -> Path:
    """Copy the bundled campaign into `folder`, run `campaign drafts`; return the outbox."""
    path = copy_bundled(folder)
    result = run_cli("--file", path, "drafts", clock=clock)
    assert result.status == 0, result.stderr
    return folder / "outbox"
