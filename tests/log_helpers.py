"""Helpers for the `campaign log` tests: real sends to the loopback test server, output read back.

Every send goes to a `SmtpServer` on 127.0.0.1 (the bundled campaign holds real officials'
addresses): `smtp_environ` is the only place SMTP settings are made, and it refuses anything else.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from campaign_factory import Run
from smtp_server import Received, SmtpServer

from campaign.cli import Environment, main

STATUS_WORDS = ("sent", "partial", "deferred", "failed", "unknown", "pending", "sending")
_COUNT = re.compile(r"\b(\d+) (" + "|".join(STATUS_WORDS) + r")\b")


def smtp_environ(server: SmtpServer) -> dict[str, str]:
    """SMTP settings for the loopback test server, in clear text (allowed on loopback only)."""
    assert server.host == "127.0.0.1" and server.port, "tests only ever send to the loopback server"
    return {
        "CAMPAIGN_SMTP_HOST": server.host,
        "CAMPAIGN_SMTP_PORT": str(server.port),
        "CAMPAIGN_SMTP_SECURITY": "none",
    }


def subprocess_environ(server: SmtpServer | None = None) -> dict[str, str]:
    """This process's environment without any CAMPAIGN_* setting, plus the test server's."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_")}
    if server is not None:
        environ.update(smtp_environ(server))
    return environ


def campaign(file: Path, *argv: str | Path, server: SmtpServer | None = None) -> Run:
    """Run `campaign --file FILE ARGV` in-process, no terminal; SMTP settings only for `server`."""
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=stdout,
        stderr=stderr,
        environ=smtp_environ(server) if server is not None else {},
        terminal=False,
    )
    status = main(["--file", str(file), *(str(arg) for arg in argv)], env)
    return Run(status, stdout.getvalue(), stderr.getvalue())


def send(file: Path, server: SmtpServer, *argv: str) -> Run:
    """`campaign send --yes ARGV` to the loopback test server."""
    return campaign(file, "send", "--yes", *argv, server=server)


def queued_replies(prefix: str, count: int = 30) -> list[tuple[int, str]]:
    """A DATA script: the n-th message taken is answered `250 ... queued as <prefix><n>`."""
    return [(250, f"2.0.0 Ok: queued as {prefix}{n:04d}") for n in range(1, count + 1)]


def queue_ids(server: SmtpServer, prefix: str) -> dict[str, str]:
    """The queue id the server gave each address (lower-cased) it took a message for.

    With a `queued_replies` DATA script the n-th taken message got reply n: the server draws
    the step and records the message in one go, so arrival order is reply order.
    """
    assert not server.rejected, "a refused DATA would shift the reply numbering"
    return {
        address.lower(): f"{prefix}{n:04d}"
        for n, message in enumerate(server.messages, 1)
        for address in message.rcpt_tos
    }


def received_by(messages: Sequence[Received], address: str) -> list[Received]:
    return [m for m in messages if address.lower() in (a.lower() for a in m.rcpt_tos)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def squash(text: str) -> str:
    """`text` without any whitespace: rich folds long words and wraps at spaces alike."""
    return "".join(text.split())


def log_records(path: Path) -> list[dict[str, Any]]:
    """The log's records, read independently of campaign's own reader."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def json_rows(run: Run) -> list[dict[str, Any]]:
    """`log --json` output: one object per line, nothing else on stdout."""
    rows = []
    for line in run.stdout.splitlines():
        value = json.loads(line)
        assert isinstance(value, dict), line
        rows.append(value)
    return rows


def csv_rows(run: Run) -> tuple[list[str], list[dict[str, str]]]:
    """`log --csv` output parsed back: the header and the rows."""
    reader = csv.DictReader(io.StringIO(run.stdout, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or ()), rows


def counts_line(text: str) -> dict[str, int]:
    """Counts per status from the first line of `text` that gives any."""
    for line in text.splitlines():
        found = _COUNT.findall(line)
        if found:
            return {status: int(count) for count, status in found}
    raise AssertionError(f"no counts in {text!r}")


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of the (one) rich table in `text`, keyed by squashed header, cells squashed.

    A row starts on a line whose first cell is filled; the lines under it continue its cells.
    """
    headers: list[str] = []
    rows: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("┃"):
            cells = line.strip("┃").split("┃")
            headers = [h + c for h, c in zip(headers, cells, strict=True)] if headers else cells
        elif line.startswith("│"):
            cells = line.strip("│").split("│")
            if cells[0].strip() or not rows:
                rows.append(cells)
            else:
                rows[-1] = [a + " " + b for a, b in zip(rows[-1], cells, strict=True)]
    keys = [squash(h) for h in headers]
    return [dict(zip(keys, (squash(c) for c in row), strict=True)) for row in rows]
