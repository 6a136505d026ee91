"""Helpers for the send tests: campaigns in tmp_path, `campaign` run in-process, the log read.

Every run here is pointed at the loopback test server alone: `smtp_environ` is the only
source of SMTP settings, and `run_cli` never lets the process environment leak in.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from campaign_factory import Run
from smtp_server import Received, SmtpServer

from campaign.cli import Environment, main
from campaign.sendlog import Replay, replay

REPO = Path(__file__).resolve().parent.parent
CAMPAIGN_ID = "kz-open-letter-2017-10"
# The bundled file's sender is a placeholder at example.org, which `send` refuses; the send
# tests give it a real-looking one (mail goes only to the loopback test server anyway).
PLACEHOLDER = "campaign@example.org"
SENDER = "campaign@mep-letter.eu"
FIXED_NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

# The seed's recipients, in file order: id -> (envelope addresses, salutation in the body).
BUNDLED: dict[str, tuple[tuple[str, ...], str]] = {
    "president": (("aprk@akorda.kz",), "Dear Mr President,"),
    "general-prosecutor": (("Gp-rk@prokuror.kz", "procuror@nursat.kz"), "Dear Mr Assanov,"),
    "national-security-committee": (("press@knb.kz",), "Dear Mr Masimov,"),
    "ministry-of-internal-affairs": (("Kense@mvd.kz",), "Dear Mr. Kassymov,"),
    "ministry-of-justice": (("kanc@adilet.gov.kz",), "Dear Mr. Beketayev,"),
    "ombudsman": (("info@ombudsman.kz", "mbudsman@ombudsman.kz"), "Dear Mr Shakirov,"),
}
BUNDLED_IDS = tuple(BUNDLED)
ALL_ADDRESSES = tuple(address for addresses, _ in BUNDLED.values() for address in addresses)


def recipient_of(address: str) -> str:
    """The bundled recipient id an envelope address belongs to."""
    for rid, (addresses, _) in BUNDLED.items():
        if address in addresses:
            return rid
    raise KeyError(address)


def copy_bundled(folder: Path, *, sender: str = SENDER) -> Path:
    """The repository's campaign copied into `folder`, sent from `sender`; the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (REPO / "recipients.yaml").read_text("utf-8")
    (folder / "recipients.yaml").write_text(text.replace(PLACEHOLDER, sender), "utf-8")
    shutil.copytree(REPO / "templates", folder / "templates")
    return folder / "recipients.yaml"


def smtp_environ(server: SmtpServer | None, **extra: str) -> dict[str, str]:
    """CAMPAIGN_SMTP_* for the loopback test server (security none unless overridden)."""
    environ = {"CAMPAIGN_SMTP_SECURITY": "none"}
    if server is not None:
        environ["CAMPAIGN_SMTP_HOST"] = "127.0.0.1"
        environ["CAMPAIGN_SMTP_PORT"] = str(server.port)
    environ.update(extra)
    return environ


def run_cli(
    file: Path,
    *argv: str | Path,
    environ: dict[str, str] | None = None,
    terminal: bool = False,
    prompt: Callable[[str], str] | None = None,
    clock: datetime | Callable[[], datetime] | None = None,
) -> Run:
    """`campaign --file FILE ARGV` in-process, with only `environ` as its environment.

    The clock is fixed unless a test gives one (a time, or a function such as `real_clock`):
    a message's Date then does not move when a second passes between two runs, so a
    resend can be compared byte for byte.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    prompts: list[str] = []

    def asked(text: str) -> str:
        prompts.append(text)
        assert prompt is not None
        return prompt(text)

    env = Environment(
        stdout=stdout,
        stderr=stderr,
        stdin=io.StringIO(),
        environ=dict(environ or {}),
        terminal=terminal,
        prompt=asked if prompt is not None else None,
        clock=clock if callable(clock) else (lambda: clock or FIXED_NOW),
    )
    status = main(["--file", str(file), *(str(arg) for arg in argv)], env)
    return Run(status, stdout.getvalue(), stderr.getvalue(), tuple(prompts))


def real_clock() -> datetime:
    return datetime.now(UTC)


def send(
    file: Path,
    server: SmtpServer,
    *argv: str | Path,
    clock: datetime | Callable[[], datetime] | None = None,
    extra: dict[str, str] | None = None,
) -> Run:
    """`campaign send --yes ARGV` against the loopback test server (`extra`: more variables)."""
    environ = smtp_environ(server, **(extra or {}))
    return run_cli(file, "send", "--yes", *argv, environ=environ, clock=clock)


def log_path(file: Path) -> Path:
    return file.parent / "outbox" / "send-log.jsonl"


def read_log(file: Path) -> list[dict[str, Any]]:
    """Every record of the campaign's send log, in order (each line must be JSON)."""
    lines = log_path(file).read_bytes().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def events(file: Path, event: str, recipient: str | None = None) -> list[dict[str, Any]]:
    return [
        record
        for record in read_log(file)
        if record["event"] == event and (recipient is None or record.get("recipient") == recipient)
    ]


def states(file: Path) -> Replay:
    return replay(log_path(file), CAMPAIGN_ID)


def status_of(file: Path, recipient: str) -> str:
    state = states(file).recipients.get(recipient)
    return state.status() if state is not None else "pending"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def plain_body(data: bytes) -> str:
    part = parse(data).get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def by_recipient(server: SmtpServer) -> dict[str, list[Received]]:
    """The messages the server took, grouped by the bundled recipient they were for."""
    grouped: dict[str, list[Received]] = {}
    for message in server.messages:
        owners = {recipient_of(address) for address in message.rcpt_tos}
        assert len(owners) == 1, message.rcpt_tos
        grouped.setdefault(owners.pop(), []).append(message)
    return grouped


def deliveries(server: SmtpServer) -> Counter[str]:
    """How many times each envelope address was given a message."""
    return Counter(address for message in server.messages for address in message.rcpt_tos)


def rcpt_commands(server: SmtpServer, address: str) -> int:
    """How many RCPT TO commands named `address`."""
    return sum(1 for _, line in server.commands if line.startswith("RCPT") and address in line)


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# ---- watching the network without touching it ------------------------------------------

_NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname")
_hook_installed = False
_seen: list[tuple[str, tuple[Any, ...]]] = []
_active = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _active and event in _NETWORK_EVENTS:
        _seen.append((event, args))


@contextmanager
def network_watch() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Record every socket connect and name lookup this process makes inside the block.

    An audit hook (PEP 578) sees them without replacing anything; it cannot be removed,
    so it is installed once and records only while a block is active.
    """
    global _hook_installed, _active
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    _seen.clear()
    _active = True
    try:
        yield _seen
    finally:
        _active = False


def write_small_campaign(folder: Path, count: int, *, text: str | None = None) -> Path:
    """A campaign of `count` recipients r001.. at example.net, with a tiny template."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "templates").mkdir(exist_ok=True)
    (folder / "templates" / "letter.txt.j2").write_text(
        text or "Dear {{ recipient.name }},\n\nA short letter.\n", encoding="utf-8"
    )
    lines = [
        "campaign:",
        '  id: "crash-test"',
        '  subject: "A letter for {{ recipient.name }}"',
        '  from: "Test Sender <sender@mep-letter.eu>"',
        '  template: "letter"',
        "recipients:",
    ]
    for n in range(1, count + 1):
        lines += [
            f'  - id: "r{n:03d}"',
            f'    name: "Recipient {n}"',
            f'    emails: ["r{n:03d}@example.net"]',
        ]
    path = folder / "recipients.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
