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

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

from campaign_factory import Run, write_campaign, yaml_quote
from log_helpers import campaign, send
from smtp_server import DROP, FaultScript, Received, SmtpServer

from campaign.loading import Options
from campaign.report import ReportData, build_report
from campaign.report_page import write_report

CAMPAIGN_ID = "report-test"
HOSTILE_NAME = 'Alice <script>document.title="pwned-name"</script> & "Co"'
HOSTILE_ORG = "Ministry \x1b[2J of <i>Tests</i>"
SENT_REPLY = "2.0.0 Ok: queued as QR0001 <script>document.title='pwned-reply'</script>"
REFUSED_REPLY = (
    "5.1.1 <img src=x onerror=\"document.title='pwned-img'\"> \x1b[31mno such user\x1b[0m"
)
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
        '  from: "Report Tester <sender@mep-letter.eu>"',
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
    received: tuple[Received, ...]  # every message a server took for the real recipients

    @property
    def outbox(self) -> Path:
        return self.folder / "outbox"

    @property
    def log(self) -> Path:
        return self.outbox / "send-log.jsonl"


def send_mixed(folder: Path) -> Mixed:
    file = write_campaign(folder, campaign_yaml())
    runs = []
    received: list[Received] = []
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
        received += server.messages
    for rid in ("unknown-one", "resolved-one"):
        with SmtpServer(faults=FaultScript(data=DROP)) as server:
            runs.append(send(file, server, "--only", rid, *FAST))
            received += server.messages
    resolved = campaign(file, "resolve", "resolved-one", "--as", "sent", "--reason", RESOLVE_REASON)
    assert resolved.status == 0, resolved.stderr
    return Mixed(folder, file, tuple(runs), tuple(received))


def report_of(file: Path, out: Path, clock: datetime) -> ReportData:
    """What `campaign report --out OUT` will do, through the library calls the CLI wraps."""
    log = file.parent / "outbox" / "send-log.jsonl"
    data = build_report(Options(file), log, clock=lambda: clock)
    write_report(data, out)
    return data


# ---- the page read back with the standard library's HTML parser ------------------------------

VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)


@dataclass
class Node:
    """An element as `html.parser` saw it: tag, attributes, children (nodes and text)."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Elements with this tag whose attributes hold these values (`class_` is one class)."""
        found = []
        for node in self.walk():
            if tag is not None and node.tag != tag:
                continue
            if all(_has(node, key, value) for key, value in attrs.items()):
                found.append(node)
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        (node,) = self.find_all(tag, **attrs)
        return node


def _has(node: Node, key: str, value: str) -> bool:
    if key == "class_":
        return value in node.attrs.get("class", "").split()
    return node.attrs.get(key.replace("_", "-")) == value


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return
        raise AssertionError(f"</{tag}> closes nothing")

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    assert len(builder.stack) == 1, f"unclosed: {[n.tag for n in builder.stack[1:]]}"
    return builder.root


def written_out(text: str) -> str:
    """`text` with control characters as the page writes them (`\\x1b`), by an independent rule."""
    return "".join(
        c if c in "\n\t" or not (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) else f"\\x{ord(c):02x}"
        for c in text
    )


CHART_SERIES_OF = {
    "accepted": "sent",
    "deferred": "deferred",
    "refused": "failed",
    "unknown": "unknown",
}


def answers_by_minute(log: Path) -> Counter[tuple[datetime, str]]:
    """Server answers per (minute, series), read straight from the log's JSON lines.

    The rule the chart states: each address's answer in a result counts once for its outcome;
    an attempt that never got an answer counts as unknown (per address) at its own time;
    test sends are left out.
    """
    found: Counter[tuple[datetime, str]] = Counter()
    waiting: dict[str, tuple[datetime, int]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("test") or "recipient" not in record:
            continue
        minute = datetime.fromisoformat(record["time"]).replace(second=0, microsecond=0)
        recipient, event = record["recipient"], record["event"]
        if event == "attempt":
            if recipient in waiting:
                earlier, count = waiting[recipient]
                found[(earlier, "unknown")] += count
            waiting[recipient] = (minute, len(record["addresses"]))
        elif event == "result":
            waiting.pop(recipient, None)
            for reply in record["replies"].values():
                if reply["outcome"] in CHART_SERIES_OF:
                    found[(minute, CHART_SERIES_OF[reply["outcome"]])] += 1
        elif event == "resolve":
            waiting.pop(recipient, None)
    for minute, count in waiting.values():
        found[(minute, "unknown")] += count
    return found


def json_statuses(file: Path) -> Counter[str]:
    """Recipients per status as `campaign log --json` gives them."""
    run = campaign(file, "log", "--json")
    assert run.status == 0, run.stderr
    return Counter(json.loads(line)["status"] for line in run.stdout.splitlines())
