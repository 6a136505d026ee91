"""The benchmark's own pieces (bench/) work at small N, so the benchmark cannot rot.

Runs in the project venv, which has neither mailmerge nor matplotlib: nothing
here needs them (the runner test uses the smtplib loop and the aiosmtplib
ceiling only, and no plot).
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import json
import os
import re
import smtplib
import socket
import subprocess
import sys
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run as bench_run  # noqa: E402
from bench.generate import generate  # noqa: E402
from bench.genlog import genlog  # noqa: E402
from bench.sink import (  # noqa: E402
    ProviderLimits,
    SinkProcess,
    SinkThread,
    SmtpSink,
    push_ceiling,
    synthetic_messages,
)

# --------------------------------------------------------------------------- helpers


def _message(to: list[str], subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def _recv_lines(sock: socket.socket, want: int, timeout: float = 10.0) -> list[bytes]:
    """Read until `want` complete reply lines have arrived."""
    sock.settimeout(timeout)
    data = b""
    while data.count(b"\n") < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.splitlines()


# --------------------------------------------------------------------------- sink


def test_sink_counts_messages_sent_with_aiosmtplib() -> None:
    async def scenario() -> SmtpSink:
        async with SmtpSink() as sink:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False)
            await client.connect()
            await client.send_message(_message(["a@example.com", "b@example.net"], "one", "x\n"))
            await client.send_message(_message(["c@example.org"], "two", "y\n" * 1000))
            await client.quit()
        return sink

    sink = asyncio.run(scenario())
    counts = sink.counts
    assert counts.total_messages == 2
    assert counts.messages_for("a@example.com") == 1
    assert counts.messages_for("B@EXAMPLE.NET") == 1  # compared without case
    assert counts.messages_for("c@example.org") == 1
    assert counts.bytes_for("a@example.com") == counts.bytes_for("b@example.net")
    assert counts.bytes_for("c@example.org") > 2000
    assert counts.total_bytes == counts.bytes_for("a@example.com") + counts.bytes_for(
        "c@example.org"
    )
    report = sink.verify(["a@example.com", "b@example.net", "c@example.org"])
    assert report.ok, report.summary()


def test_sink_answers_pipelined_commands_in_order_and_unstuffs_dots() -> None:
    body1 = b"Subject: one\r\n\r\n..leading dot line\r\nplain\r\n"  # stuffed: ".leading"
    body2 = b"Subject: two\r\n\r\nsecond\r\n"
    with (
        SinkThread(keep_messages=True) as st,
        socket.create_connection(("127.0.0.1", st.port)) as s,
    ):
        assert _recv_lines(s, 1)[0].startswith(b"220")
        s.sendall(b"EHLO client.invalid\r\n")
        ehlo = _recv_lines(s, 6)
        assert any(b"PIPELINING" in line for line in ehlo)
        assert ehlo[-1].startswith(b"250 ")
        # one group: MAIL, two RCPT, DATA -> four replies, in order
        s.sendall(
            b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\n"
            b"RCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        replies = _recv_lines(s, 4)
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"]
        # content, then the next transaction's group, in one write (RFC 2920)
        s.sendall(
            body1 + b".\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
        )
        replies = _recv_lines(s, 4)
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"]
        # the last message arrives a few bytes at a time, end marker split too
        data = body2 + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n"
        for i in range(0, len(data), 3):
            s.sendall(data[i : i + 3])
            time.sleep(0.001)
        replies = _recv_lines(s, 4)
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"221"]
        counts = st.sink.counts
        messages = list(st.sink.messages)
    unstuffed1 = body1.replace(b"\r\n..", b"\r\n.")
    assert counts.total_messages == 2
    assert counts.per_recipient == {
        "a@example.com": [1, len(unstuffed1)],
        "b@example.com": [1, len(unstuffed1)],
        "c@example.com": [1, len(body2)],
    }
    assert messages[0][1] == ("a@example.com", "b@example.com")
    assert messages[0][2] == unstuffed1
    assert messages[1][2] == body2


class _FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 4096])
def test_sink_parser_is_independent_of_how_the_bytes_are_split(chunk: int) -> None:
    """Drive the protocol object directly: same replies and counts for any split."""
    conversation = (
        b"EHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n"
        b"..dot\r\nline\r\n.\r\n"
        b"MAIL FROM:<s@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        b".\r\n"  # an empty message
        b"MAIL FROM:<s@example.org>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
        b"\r\n.\r\nQUIT\r\n"
    )

    async def scenario() -> tuple[_FakeTransport, SmtpSink]:
        from bench.sink import _Session

        sink = SmtpSink()
        session = _Session(sink)
        transport = _FakeTransport()
        session.connection_made(transport)  # type: ignore[arg-type]
        for i in range(0, len(conversation), chunk):
            session.data_received(conversation[i : i + chunk])
        return transport, sink

    transport, sink = asyncio.run(scenario())
    codes = [line[:3] for line in transport.written.splitlines() if line[3:4] == b" "]
    assert codes == [b"220", b"250"] + [b"250", b"250", b"354", b"250"] * 3 + [b"221"]
    assert transport.closed
    assert sink.counts.per_recipient == {
        "a@example.com": [1, len(b".dot\r\nline\r\n")],
        "b@example.com": [1, 0],
        "c@example.com": [1, 2],
    }


def test_sink_refuses_out_of_order_commands() -> None:
    with SinkThread() as st, socket.create_connection(("127.0.0.1", st.port)) as s:
        _recv_lines(s, 1)
        s.sendall(b"HELO c\r\nRCPT TO:<a@example.com>\r\nDATA\r\nMAIL FROM:<>\r\nDATA\r\nBOGUS\r\n")
        replies = _recv_lines(s, 6)
        assert [r[:3] for r in replies] == [b"250", b"503", b"503", b"250", b"503", b"500"]
    assert st.sink.counts.total_messages == 0


def test_verify_catches_a_duplicate_a_missing_and_an_unexpected_message() -> None:
    with SinkThread() as st:
        with smtplib.SMTP("127.0.0.1", st.port) as client:
            client.sendmail("s@example.org", ["a@example.com"], b"Subject: 1\r\n\r\nx\r\n")
            client.sendmail("s@example.org", ["a@example.com"], b"Subject: 2\r\n\r\nx\r\n")
            client.sendmail("s@example.org", ["b@example.com"], b"Subject: 3\r\n\r\nx\r\n")
            client.sendmail("s@example.org", ["stray@example.net"], b"Subject: 4\r\n\r\nx\r\n")
        report = st.verify(["a@example.com", "b@example.com", "c@example.com"])
        clean = st.verify(["b@example.com", "stray@example.net"])
    assert not report.ok
    assert report.duplicates == {"a@example.com": 2}
    assert report.missing == ["c@example.com"]
    assert report.unexpected == {"stray@example.net": 1}
    assert "missing" in report.summary() and "FAILED" in report.summary()
    assert report.to_dict()["missing_count"] == 1
    assert not clean.ok and clean.duplicates == {} and clean.unexpected == {"a@example.com": 2}


def test_latency_mode_delays_every_reply() -> None:
    delay = 0.15
    with SinkThread(latency=delay) as st:
        start = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", st.port))
        try:
            assert _recv_lines(s, 1)[0].startswith(b"220")
            assert time.perf_counter() - start >= delay * 0.99
            start = time.perf_counter()
            s.sendall(b"NOOP\r\n")
            assert _recv_lines(s, 1)[0].startswith(b"250")
            assert time.perf_counter() - start >= delay * 0.99
            # a pipelined group: every reply at least `delay` after it was sent
            start = time.perf_counter()
            s.sendall(b"NOOP\r\nNOOP\r\nNOOP\r\n")
            replies = _recv_lines(s, 3)
            assert [r[:3] for r in replies] == [b"250"] * 3
            assert time.perf_counter() - start >= delay * 0.99
        finally:
            s.close()


def test_sink_process_writes_its_counts_on_sigterm(tmp_path: Path) -> None:
    sink = SinkProcess(tmp_path / "report.json", max_seconds=60)
    with sink:
        with smtplib.SMTP("127.0.0.1", sink.port) as client:
            client.sendmail("s@example.org", ["a@example.com", "b@example.com"], b"x\r\n")
        counts = sink.stop()
    assert counts.total_messages == 1
    assert counts.verify(["a@example.com", "b@example.com"]).ok
    assert json.loads((tmp_path / "report.json").read_text())["total_messages"] == 1


def test_sink_ceiling_pushes_pipelined_bytes() -> None:
    messages = synthetic_messages(300, size=2000)

    async def scenario() -> tuple[dict[str, object], bool]:
        async with SmtpSink() as sink:
            result = await push_ceiling(sink.port, messages, connections=4, window=16)
            return result, sink.verify([m[1][0] for m in messages]).ok

    result, ok = asyncio.run(scenario())
    assert ok
    assert result["messages"] == 300 and not result["errors"]
    assert float(result["msgs_per_s"]) > 0  # type: ignore[arg-type]


# --------------------------------------------------------------------------- provider mode


def _greeting(port: int) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    return s, _recv_lines(s, 1)[0]


@pytest.mark.bench
def test_provider_sink_refuses_mail_beyond_the_burst_with_the_configured_reply() -> None:
    limits = ProviderLimits(per_minute=1, burst=3, mail_reply="450 4.7.1 too much mail from you")
    refusals: list[tuple[int, bytes]] = []
    with SinkThread(provider=limits) as st, smtplib.SMTP("127.0.0.1", st.port) as client:
        for i in range(5):
            try:
                client.sendmail("s@example.org", [f"r{i}@example.com"], b"Subject: x\r\n\r\nx\r\n")
            except smtplib.SMTPSenderRefused as err:
                refusals.append((err.smtp_code, err.smtp_error))
                client.rset()
        counts = st.sink.counts
    assert refusals == [(450, b"4.7.1 too much mail from you")] * 2
    assert sorted(counts.per_recipient) == ["r0@example.com", "r1@example.com", "r2@example.com"]
    assert (counts.mail_commands, counts.refused_mail, counts.refused_connections) == (5, 2, 0)


@pytest.mark.bench
def test_provider_sink_refills_its_bucket_at_its_rate() -> None:
    limits = ProviderLimits(per_minute=300, burst=1)  # a message every 0.2 s
    with SinkThread(provider=limits) as st, smtplib.SMTP("127.0.0.1", st.port) as client:
        first = client.docmd("MAIL", "FROM:<s@example.org>")
        client.rset()
        at_once = client.docmd("MAIL", "FROM:<s@example.org>")
        client.rset()
        time.sleep(0.3)
        later = client.docmd("MAIL", "FROM:<s@example.org>")
    assert first[0] == 250 and later[0] == 250
    assert at_once == (451, b"4.7.1 rate limited, try again later")


@pytest.mark.bench
def test_provider_sink_refuses_a_connection_beyond_the_limit_at_the_greeting() -> None:
    limits = ProviderLimits(per_minute=60, burst=5, max_connections=2)
    with SinkThread(provider=limits) as st:
        one, g1 = _greeting(st.port)
        two, g2 = _greeting(st.port)
        three, g3 = _greeting(st.port)
        closed = three.recv(100) == b""  # the sink closed the third after its reply
        three.close()
        one.close()
        time.sleep(0.1)
        four, g4 = _greeting(st.port)
        two.close()
        four.close()
        counts = st.sink.counts
    assert [g[:4] for g in (g1, g2, g4)] == [b"220 "] * 3
    assert g3 == b"421 4.7.0 Too many concurrent connections"
    assert closed
    assert (counts.refused_connections, counts.connections, counts.max_concurrent) == (1, 3, 2)


@pytest.mark.bench
def test_provider_sink_closes_the_connection_after_a_421_at_mail() -> None:
    limits = ProviderLimits(per_minute=1, burst=1, mail_reply="421 4.7.28 unusual rate of mail")
    with SinkThread(provider=limits) as st:
        s, _ = _greeting(st.port)
        s.sendall(b"EHLO c.example.org\r\nMAIL FROM:<s@example.org>\r\nRSET\r\n")
        _recv_lines(s, 8)
        s.sendall(b"MAIL FROM:<s@example.org>\r\nNOOP\r\n")
        reply = _recv_lines(s, 1)
        rest = s.recv(100)
        s.close()
    assert reply == [b"421 4.7.28 unusual rate of mail"]
    assert rest == b""  # closed: the NOOP after it got no answer


@pytest.mark.bench
def test_provider_limits_refuse_a_reply_that_is_not_one_4xx_line() -> None:
    for reply in ("250 fine", "rate limited", "451 4.7.1 two\r\n451 lines"):
        with pytest.raises(ValueError, match="refusal"):
            ProviderLimits(per_minute=60, burst=1, mail_reply=reply)


@pytest.mark.bench
def test_provider_sink_process_reports_its_refusals(tmp_path: Path) -> None:
    limits = ProviderLimits(per_minute=1, burst=1, max_connections=1)
    sink = SinkProcess(tmp_path / "report.json", max_seconds=60, provider=limits)
    with sink:
        with smtplib.SMTP("127.0.0.1", sink.port) as client:
            client.sendmail("s@example.org", ["a@example.com"], b"x\r\n")
            with pytest.raises(smtplib.SMTPSenderRefused):
                client.sendmail("s@example.org", ["b@example.com"], b"x\r\n")
            with pytest.raises(smtplib.SMTPConnectError):
                smtplib.SMTP("127.0.0.1", sink.port, timeout=10)
        counts = sink.stop()
    assert (counts.total_messages, counts.refused_mail, counts.refused_connections) == (1, 1, 1)


# --------------------------------------------------------------------------- generator


def _scalar_styles(node: yaml.Node, out: list[tuple[str, str | None]]) -> None:
    if isinstance(node, yaml.ScalarNode):
        out.append((node.value, node.style))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _scalar_styles(item, out)
    elif isinstance(node, yaml.MappingNode):
        keys = [k.value for k, _ in node.value]
        assert len(keys) == len(set(keys)), f"duplicate keys {keys}"
        for _, value in node.value:  # keys are plain identifiers, values must be quoted
            _scalar_styles(value, out)


def test_generator_writes_a_well_formed_campaign(tmp_path: Path) -> None:
    n = 60
    g = generate(n, tmp_path / "c", seed=7)
    text = g.yaml_path.read_text("utf-8")
    for event in yaml.parse(text):
        assert not getattr(event, "anchor", None)
        assert not isinstance(event, yaml.AliasEvent)
        assert getattr(event, "tag", None) is None  # no explicit tags
    styles: list[tuple[str, str | None]] = []
    node = yaml.compose(text)
    assert node is not None
    _scalar_styles(node, styles)
    assert styles and all(style == '"' for _, style in styles), [v for v, s in styles if s != '"'][
        :5
    ]

    doc = yaml.safe_load(text)
    people = doc["recipients"]
    assert len(people) == n
    ids = [p["id"] for p in people]
    assert len(set(ids)) == n and all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids)
    addresses = [a for p in people for a in p["emails"]]
    assert len(set(addresses)) == len(addresses) == g.address_count
    assert sorted(addresses) == sorted(g.addresses())
    assert all(1 <= len(p["emails"]) <= 3 for p in people)
    assert {len(p["emails"]) for p in people} >= {1, 2}
    assert all(
        a.rpartition("@")[2] in {"example.com", "example.net", "example.org"} for a in addresses
    )
    assert any(not p["name"].isascii() for p in people)
    assert any("," in p["name"] for p in people)
    assert g.yaml_path.stat().st_size < 64 * 1024 * 1024

    # the templates render strictly with the project's context names
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(g.templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
    )
    campaign = doc["campaign"]
    for person in people[:5]:
        context = {"campaign": campaign, "recipient": person, "recipients": people}
        txt = env.get_template(f"{campaign['template']}.txt.j2").render(context)
        html = env.get_template(f"{campaign['template']}.html.j2").render(context)
        subject = env.from_string(campaign["subject"]).render(context)
        assert person["salutation"] in txt and person["organisation"] in txt
        assert 3000 <= len(txt.encode()) <= 6000  # "a letter of about 4 KB"
        assert html.lstrip().startswith("<!DOCTYPE html>") and "</html>" in html
        assert person["name"] in subject

    # the same data as CSV, and mailmerge's files
    with g.csv_path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ids
    assert [r["email"].split(", ") for r in rows] == [p["emails"] for p in people]
    assert [r["name"] for r in rows] == [p["name"] for p in people]
    mm = g.mailmerge_template.read_text("utf-8")
    assert mm.startswith("TO: {{ email }}\n") and "multipart/alternative" in mm
    assert "recipient." not in mm and "campaign." not in mm
    assert "host = 127.0.0.1" in g.mailmerge_config.read_text() and "security" not in (
        g.mailmerge_config.read_text().replace("no security", "")
    )
    assert json.loads(g.campaign_json.read_text("utf-8"))["id"] == campaign["id"]

    # deterministic for a seed
    again = generate(n, tmp_path / "again", seed=7)
    assert again.yaml_path.read_bytes() == g.yaml_path.read_bytes()
    assert again.csv_path.read_bytes() == g.csv_path.read_bytes()
    other = generate(n, tmp_path / "other", seed=8)
    assert other.yaml_path.read_bytes() != g.yaml_path.read_bytes()


def _campaign_check_available() -> bool:
    if importlib.util.find_spec("campaign.cli") is None:
        return False
    probe = subprocess.run(
        [sys.executable, "-m", "campaign", "check", "--help"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


# NOTE for the lead: issue 6 asks that the generated file pass `campaign check`.
# This runs it whenever the CLI has a `check` command (it is skipped before).
@pytest.mark.bench
def test_generated_campaign_passes_campaign_check(tmp_path: Path) -> None:
    if not _campaign_check_available():
        pytest.skip("`campaign check` is not available yet")
    g = generate(40, tmp_path / "c", seed=3)
    done = subprocess.run(
        [sys.executable, "-m", "campaign", "--file", str(g.yaml_path), "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


# --------------------------------------------------------------------------- runner


@pytest.mark.bench
def test_measure_process_reports_wall_cpu_and_rss(tmp_path: Path) -> None:
    r = bench_run.measure_process(
        [sys.executable, "-c", "x = bytearray(30_000_000); sum(range(2_000_000))"],
        timeout=60,
    )
    assert r.exit_code == 0 and not r.timed_out
    assert r.wall_s > 0 and r.cpu_s > 0
    assert r.peak_rss_kib > 25_000
    ballast = bytearray(150_000_000)  # this process's RSS must not leak into the child's
    small = bench_run.measure_process([sys.executable, "-c", "pass"], timeout=60)
    assert small.exit_code == 0 and 0 < small.peak_rss_kib < 60_000, small
    del ballast
    slow = bench_run.measure_process(
        [sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5
    )
    assert slow.timed_out and slow.exit_code != 0


@pytest.mark.bench
def test_runner_quick_produces_a_results_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sender that cannot run must show as "not available", not crash the run.
    broken = bench_run.Sender(
        "broken",
        "a sender whose command fails, as `campaign send` did before it existed",
        lambda ctx: [ctx.python, "-c", "import sys; sys.exit('no such command: send')"],
    )
    monkeypatch.setitem(bench_run.SENDERS, "broken", broken)
    md = tmp_path / "RESULTS.md"
    raw = tmp_path / "raw.jsonl"
    code = bench_run.main(
        [
            "--quick",
            "--senders",
            "smtplib-loop,aiosmtplib-ceiling,broken",
            "--latency",
            "0.005",
            "--work",
            str(tmp_path / "work"),
            "--results-md",
            str(md),
            "--raw",
            str(raw),
            "--no-plot",
            "--quiet",
        ]
    )
    assert code == 0
    table = md.read_text("utf-8")
    assert "| N | sender | msgs/s (median) |" in table
    assert re.search(r"\| 200 \| smtplib-loop \| [\d,]+ \|.*\| 1/1 \|", table)
    assert re.search(r"\| 200 \| aiosmtplib-ceiling \| [\d,]+ \|.*\| 1/1 \|", table)
    assert re.search(r"\| 50 \| smtplib-loop \| [\d,]+ \|", table)  # latency mode
    assert "| 200 | broken | not available |" in table
    assert "CPUs" in table and "Python 3." in table
    assert "sink's own ceiling" in table
    # the "also measured" figures, at quick scale, each verified
    assert "## Also measured" in table
    for title in ("`campaign check`", "`campaign log` (table)", "`campaign log --json`"):
        assert re.search(re.escape(f"| {title} |") + r".*\| 1/1 \| [\d.]+ \|", table), title
    assert table.count("| `campaign send --concurrency K` at the sink | N = ") == 2
    assert "not the target's scale" in table and "**FAILED**" not in table
    # nothing deleted during the run, all at the end but the run that did not work
    (root,) = (tmp_path / "work" / "runs").iterdir()
    assert sorted(p.name for p in root.iterdir()) == [
        bench_run.KEEP_MARK,
        "loopback-n200-broken-1",
    ]
    records = [json.loads(line) for line in raw.read_text("utf-8").splitlines()]
    extras = [r for r in records if r["kind"] == "extra"]
    assert {(r["name"], r["n"]) for r in extras} == {
        ("check", 1000),
        ("log-json", 1000),
        ("log-table", 1000),
        ("send-rss", 200),
        ("send-rss", 1000),
    }
    assert all(r["verified"] and r["peak_rss_mib"] > 0 for r in extras)
    (gen,) = [r for r in records if r["kind"] == "genlog"]
    assert gen["events"] == 10_000 and sum(gen["expected"].values()) == 1000
    assert len([r for r in records if r["kind"] == "extra-target"]) == 4
    sends = [r for r in records if r["kind"] == "send"]
    ok = [r for r in sends if r["status"] == "ok"]
    assert {(r["mode"], r["sender"]) for r in ok} == {
        ("loopback", "smtplib-loop"),
        ("loopback", "aiosmtplib-ceiling"),
        ("latency", "smtplib-loop"),
        ("latency", "aiosmtplib-ceiling"),
    }
    assert all(r["verify"]["ok"] and r["peak_rss_mib"] > 0 and r["cpu_s"] > 0 for r in ok)
    assert [r["status"] for r in sends if r["sender"] == "broken"] == ["unavailable"]
    assert any(r["kind"] == "sink-ceiling" and r["verified"] for r in records)


def test_runs_are_removed_only_at_the_end_and_kept_ones_survive(tmp_path: Path) -> None:
    cfg = bench_run.Config(work=tmp_path / "work", quiet=True)
    first = bench_run.fresh_run_dir(cfg, "loopback-n10-campaign-1")
    again = bench_run.fresh_run_dir(cfg, "loopback-n10-campaign-1")
    assert first != again and first.is_dir() and again.is_dir()  # never reused
    (first / "outbox").mkdir()
    failed = bench_run.fresh_run_dir(cfg, "failed-run")
    runs = tmp_path / "work" / "runs"
    stale = runs / "20200101T000000Z-999999999"  # an interrupted run's leftovers
    stale.mkdir()
    kept = runs / "20200101T000000Z-999999998"
    kept.mkdir()
    (kept / bench_run.KEEP_MARK).write_text("kept by --keep-runs\n")
    notes = bench_run.remove_runs(cfg, keep=[failed])
    assert not first.exists() and not again.exists() and failed.is_dir()
    assert (failed.parent / bench_run.KEEP_MARK).exists()
    assert not stale.exists() and kept.is_dir()
    assert any("failed" in n for n in notes)


def _campaign_cli(argv: list[str], environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The product's CLI in this process, as its own tests run it."""
    from campaign.cli import Environment, main

    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, environ=environ or {}, terminal=False)
    return main(argv, env), out.getvalue(), err.getvalue()


def test_genlog_writes_a_log_campaign_log_reads_with_the_expected_counts(tmp_path: Path) -> None:
    g = generate(50, tmp_path / "c", seed=5)
    log = tmp_path / "send-log.jsonl"
    result = genlog(g.yaml_path, log, 400, seed=2)
    lines = log.read_text("utf-8").splitlines()
    assert result.events == len(lines) == 400
    records = [json.loads(line) for line in lines]
    assert records[0]["event"] == "run-start"
    assert {r["campaign"] for r in records} == {"bench-n50"}
    assert sum(r["event"] == "planned" for r in records) == 50
    events = Counter(r["event"] for r in records)
    assert events["attempt"] > events["result"] > 50  # retries, and attempts left open

    code, out, err = _campaign_cli(["--file", str(g.yaml_path), "log", "--log", str(log), "--json"])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 50
    assert dict(sorted(Counter(r["status"] for r in rows).items())) == result.expected
    assert sum(result.expected.values()) == 50
    assert result.expected.get("sent") and result.expected.get("deferred")
    assert result.expected.get("unknown") == events["attempt"] - events["result"]
    assert result.expected.get("partial")  # at least one 550 among several addresses
    # deterministic for a seed
    again = genlog(g.yaml_path, tmp_path / "again.jsonl", 400, seed=2)
    assert (tmp_path / "again.jsonl").read_bytes() == log.read_bytes()
    assert again.expected == result.expected


def test_genlog_records_have_the_shapes_campaign_send_writes(tmp_path: Path) -> None:
    """Key for key and value for value where they must agree, against a real send's log."""
    g = generate(12, tmp_path / "c", seed=4)
    real = tmp_path / "real.jsonl"
    with SinkThread() as st:
        code, out, err = _campaign_cli(
            [
                "--file",
                str(g.yaml_path),
                "--outbox",
                str(tmp_path / "outbox"),
                "send",
                "--yes",
                "--concurrency",
                "2",
                "--log",
                str(real),
            ],
            environ={
                "CAMPAIGN_SMTP_HOST": "127.0.0.1",
                "CAMPAIGN_SMTP_PORT": str(st.port),
                "CAMPAIGN_SMTP_SECURITY": "none",
            },
        )
        assert code == 0, out + err
        assert st.verify(g.addresses()).ok
    made = tmp_path / "made.jsonl"
    genlog(g.yaml_path, made, 200, seed=3)

    def shapes(path: Path) -> dict[tuple[str, bool], list[str]]:
        found: dict[tuple[str, bool], list[str]] = {}
        for line in path.read_text("utf-8").splitlines():
            record = json.loads(line)
            found.setdefault((record["event"], "archive" in record), list(record))
        return found

    real_shapes, made_shapes = shapes(real), shapes(made)
    assert set(real_shapes) <= set(made_shapes)
    for key, keys in real_shapes.items():
        assert made_shapes[key] == keys, key
    assert made_shapes[("result", False)] == [
        k for k in real_shapes[("result", True)] if k not in ("archive", "sha256")
    ]

    def by_recipient(
        path: Path, event: str, *, archived: bool = False
    ) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for line in path.read_text("utf-8").splitlines():
            record = json.loads(line)
            if record["event"] == event and (not archived or "archive" in record):
                out.setdefault(str(record["recipient"]), record)
        return out

    real_attempts, made_attempts = by_recipient(real, "attempt"), by_recipient(made, "attempt")
    for rid, record in made_attempts.items():
        for name in ("message_id", "all_addresses", "campaign"):
            assert record[name] == real_attempts[rid][name], (rid, name)
    real_results = by_recipient(real, "result", archived=True)
    made_results = by_recipient(made, "result", archived=True)
    for rid, record in made_results.items():
        # The same folder and draft name; the suffix is each letter's own SHA-256.
        made_name, real_name = str(record["archive"]), str(real_results[rid]["archive"])
        assert made_name.rsplit(".", 2)[0] == real_name.rsplit(".", 2)[0]
        assert made_name.split(".")[-2] == str(record["sha256"])[:16]
    real_planned, made_planned = by_recipient(real, "planned"), by_recipient(made, "planned")
    assert {r: p["addresses"] for r, p in made_planned.items()} == {
        r: p["addresses"] for r, p in real_planned.items()
    }
    assert os.path.getsize(made) > 0


def test_targets_are_judged_at_their_n_and_never_rounded_up_to_a_pass() -> None:
    def run(n: int, sender: str, rate: float) -> dict[str, object]:
        return {
            "kind": "send",
            "mode": bench_run.LOOPBACK,
            "latency_s": 0.0,
            "n": n,
            "sender": sender,
            "status": "ok",
            "connections": 1,
            "stderr_tail": "",
            "msgs_per_s": rate,
            "wall_s": n / rate,
            "cpu_s": 1.0,
            "peak_rss_mib": 30.0,
        }

    cfg = bench_run.Config(ns=[1000, 10000], latency=0.0)
    records = [
        run(1000, "campaign", 1193.6),
        run(1000, "mailmerge", 398.4),
        run(10000, "campaign", 2040.0),
        run(10000, "mailmerge", 380.0),
    ]
    results = bench_run.Results(cfg, records, [], {}, {}, "now")
    rows = {(t["target"], t["n"]): t for t in bench_run.evaluate_targets(results)}
    small = rows[("campaign ≥ 3 × mailmerge", 1000)]
    assert small["verdict"].startswith("(missed; the target is at N = 10,000")
    assert bench_run._ratio(small["ratio"], 3.0) == "2.996"
    assert rows[("campaign ≥ 3 × mailmerge", 10000)]["verdict"] == "met"
    assert "| 2.996 | ≥ 3 |" in bench_run.render_markdown(results)


def test_generator_attaches_a_pdf_to_every_letter_when_asked(tmp_path: Path) -> None:
    from campaign.loading import Options, load_campaign

    g = generate(5, tmp_path / "c", seed=3, attachment_kb=2)
    assert g.attachment is not None and g.attachment.stat().st_size == 2048
    assert g.attachment.read_bytes().startswith(b"%PDF-") and g.attachment.read_bytes().endswith(
        b"%%EOF\n"
    )
    source = load_campaign(Options(g.yaml_path))
    assert [a.name for a in source.campaign.attachments] == ["letter.pdf"]
    plain = generate(5, tmp_path / "p", seed=3)
    assert plain.attachment is None and "attachments" not in plain.yaml_path.read_text()


def test_the_attachment_section_says_what_the_pdf_costs() -> None:
    def run(case: str, rate: float, size: int) -> dict[str, object]:
        return {
            "kind": bench_run.ATTACHMENT,
            "case": case,
            "n": 1000,
            "msgs_per_s": rate,
            "wall_s": 1000 / rate,
            "cpu_s": 1.0,
            "peak_rss_mib": 40.0,
            "bytes_per_letter": size,
            "attachment_bytes": 204_800 if case == "pdf" else 0,
            "verified": True,
        }

    cfg = bench_run.Config(attachment_only=True, command="python bench/run.py --attachment-only")
    results = bench_run.Results(cfg, [], [], {}, {}, "now")
    results.attachment = [run("plain", 500.0, 8_500), run("pdf", 200.0, 289_000)]
    text = "\n".join(bench_run.render_attachment(results))
    assert "| 200 KiB PDF | 200 | 200 | 200 | 5.00 |" in text
    assert "0.40× the rate without it (3.00 ms more a letter" in text
    before = "# Benchmark results\n\n## Also measured\n\nx\n"
    replaced = bench_run.replace_section(
        before, bench_run.ATTACHMENT_HEADING, bench_run.render_attachment(results)
    )
    assert replaced.index(bench_run.ATTACHMENT_HEADING) < replaced.index("## Also measured")
