"""The baseline senders the benchmark runs beside `campaign send`, each as its own process.

    python bench/baselines.py smtplib-loop --port P --data DIR [--source csv|yaml]
        What a careful user writes by hand: Jinja2 + email.message.EmailMessage
        per recipient, one persistent smtplib.SMTP connection, errors counted.
    python bench/baselines.py prebuild --data DIR --out messages.pkl
        Renders and serialises every message once (same builder as the loop),
        for the transport ceiling; not timed.
    python bench/baselines.py aiosmtplib-ceiling --port P --messages messages.pkl --concurrency K
        The transport ceiling: the pre-built bytes sent with aiosmtplib over K
        connections; the process only reads the file and sends.

mailmerge (the PyPI package) is run as its console script; see
`mailmerge_argv`. It opens a new SMTP connection for every message (that is
how mailmerge 2.x works), and a config without `security` means a plain,
unauthenticated session.

DIR is what bench/generate.py wrote. Exit status 0 only if every message was
accepted; the last stdout line is a one-line summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- input


def read_campaign(data: Path) -> dict[str, Any]:
    return dict(json.loads((data / "campaign.json").read_text("utf-8")))


def read_rows(data: Path, source: str) -> list[dict[str, Any]]:
    """The recipients, as dicts with an `emails` list, from the CSV or the YAML."""
    if source == "yaml":
        import yaml

        with (data / "recipients.yaml").open(encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        return list(doc["recipients"])
    rows = []
    with (data / "recipients.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            row["emails"] = [a.strip() for a in row.pop("email").split(",") if a.strip()]
            rows.append(row)
    return rows


class Builder:
    """Jinja2 + EmailMessage, once per recipient: the plain way to build a letter."""

    def __init__(self, data: Path, campaign: dict[str, Any], rows: list[dict[str, Any]]):
        import email.policy
        import email.utils

        import jinja2

        self.campaign = campaign
        self.rows = rows
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(data / "templates")),
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: name is not None and name.endswith(".html.j2"),
            keep_trailing_newline=True,
        )
        name = campaign["template"]
        self.text = env.get_template(f"{name}.txt.j2")
        self.html = env.get_template(f"{name}.html.j2")
        self.subject = env.from_string(campaign["subject"])
        self.from_header = campaign["from"]
        self.envelope_from = email.utils.parseaddr(campaign["from"])[1]
        self.domain = self.envelope_from.rpartition("@")[2]
        self.policy = email.policy.SMTP

    def build(self, row: dict[str, Any]) -> Any:
        from email.headerregistry import Address
        from email.message import EmailMessage
        from email.utils import formatdate, make_msgid

        context = {"campaign": self.campaign, "recipient": row, "recipients": self.rows}
        msg = EmailMessage()
        msg["From"] = self.from_header
        msg["To"] = [Address(display_name=row["name"], addr_spec=a) for a in row["emails"]]
        msg["Subject"] = self.subject.render(context)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=self.domain)
        msg.set_content(self.text.render(context))
        msg.add_alternative(self.html.render(context), subtype="html")
        return msg


# --------------------------------------------------------------------------- senders


def smtplib_loop(args: argparse.Namespace) -> int:
    import smtplib

    data = Path(args.data)
    campaign = read_campaign(data)
    rows = read_rows(data, args.source)
    builder = Builder(data, campaign, rows)
    sent = failed = 0
    smtp = smtplib.SMTP(args.host, args.port, timeout=args.timeout)
    try:
        smtp.ehlo()
        for row in rows:
            msg = builder.build(row)
            for attempt in (1, 2):
                try:
                    refused = smtp.send_message(
                        msg, from_addr=builder.envelope_from, to_addrs=row["emails"]
                    )
                except smtplib.SMTPServerDisconnected:
                    if attempt == 2:
                        raise
                    smtp = smtplib.SMTP(args.host, args.port, timeout=args.timeout)
                    smtp.ehlo()
                    continue
                except smtplib.SMTPException as exc:
                    failed += 1
                    print(f"{row['id']}: {exc}", file=sys.stderr)
                else:
                    if refused:
                        failed += 1
                        print(f"{row['id']}: refused {refused}", file=sys.stderr)
                    else:
                        sent += 1
                break
    finally:
        try:
            smtp.quit()
        except smtplib.SMTPException:
            smtp.close()
    print(f"smtplib-loop: sent {sent}, failed {failed}")
    return 0 if failed == 0 else 1


def prebuild(args: argparse.Namespace) -> int:
    import pickle

    data = Path(args.data)
    campaign = read_campaign(data)
    rows = read_rows(data, args.source)
    builder = Builder(data, campaign, rows)
    out = []
    for row in rows:
        msg = builder.build(row)
        out.append(
            (builder.envelope_from, list(row["emails"]), msg.as_bytes(policy=builder.policy))
        )
    with open(args.out, "wb") as fh:
        pickle.dump(out, fh, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"prebuild: {len(out)} messages, {sum(len(m) for _, _, m in out)} bytes -> {args.out}")
    return 0


def aiosmtplib_ceiling(args: argparse.Namespace) -> int:
    import asyncio
    import pickle

    import aiosmtplib

    with open(args.messages, "rb") as fh:
        messages: list[tuple[str, list[str], bytes]] = pickle.load(fh)
    todo: Iterator[tuple[str, list[str], bytes]] = iter(messages)
    counts = {"sent": 0, "failed": 0}

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(
            hostname=args.host, port=args.port, use_tls=False, start_tls=False, timeout=args.timeout
        )
        await smtp.connect()
        try:
            for sender, rcpts, data in todo:
                try:
                    errors, _ = await smtp.sendmail(sender, rcpts, data)
                except aiosmtplib.SMTPException as exc:
                    counts["failed"] += 1
                    print(f"{rcpts}: {exc}", file=sys.stderr)
                    continue
                if errors:
                    counts["failed"] += 1
                    print(f"{rcpts}: refused {errors}", file=sys.stderr)
                else:
                    counts["sent"] += 1
        finally:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()

    async def run() -> None:
        await asyncio.gather(*(worker() for _ in range(max(1, args.concurrency))))

    asyncio.run(run())
    print(f"aiosmtplib-ceiling: sent {counts['sent']}, failed {counts['failed']}")
    return 0 if counts["failed"] == 0 and counts["sent"] == len(messages) else 1


def mailmerge_argv(command: list[str], data: Path, config: Path) -> list[str]:
    """mailmerge as a user runs it, sending for real, every row, printing little.

    `command` is the console script, e.g. [".../bin/mailmerge"]: `python -m
    mailmerge` is broken in mailmerge 2.x (its __main__ calls main() before it
    defines the helpers main needs).
    """
    return [
        *command,
        "--no-dry-run",
        "--no-limit",
        "--template",
        str(data / "mailmerge_template.txt"),
        "--database",
        str(data / "recipients.csv"),
        "--config",
        str(config),
        "--output-format",
        "raw",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    loop = sub.add_parser("smtplib-loop", help="Jinja2 + EmailMessage + one smtplib connection")
    loop.add_argument("--data", required=True)
    loop.add_argument("--source", choices=["csv", "yaml"], default="csv")
    loop.add_argument("--host", default=HOST)
    loop.add_argument("--port", type=int, required=True)
    loop.add_argument("--timeout", type=float, default=60.0)
    loop.set_defaults(func=smtplib_loop)

    pre = sub.add_parser("prebuild", help="pre-build the messages for the ceiling (untimed)")
    pre.add_argument("--data", required=True)
    pre.add_argument("--source", choices=["csv", "yaml"], default="csv")
    pre.add_argument("--out", required=True)
    pre.set_defaults(func=prebuild)

    ceil = sub.add_parser("aiosmtplib-ceiling", help="pre-built bytes over K aiosmtplib conns")
    ceil.add_argument("--messages", required=True)
    ceil.add_argument("--host", default=HOST)
    ceil.add_argument("--port", type=int, required=True)
    ceil.add_argument("--concurrency", type=int, default=8)
    ceil.add_argument("--timeout", type=float, default=60.0)
    ceil.set_defaults(func=aiosmtplib_ceiling)

    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
