"""A campaigner's day with a real server: what send, resolve and log say and record.

Placeholder senders, server-wide refusals, corrected addresses, the server met before the
question, the review at 80 columns, dry runs and test sends; against aiosmtpd on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from log_helpers import counts_line
from send_helpers import (
    BUNDLED_IDS,
    SENDER,
    copy_bundled,
    events,
    log_path,
    run_cli,
    send,
    smtp_environ,
    status_of,
    write_small_campaign,
)
from smtp_server import FaultScript, SmtpServer, TlsFiles

from campaign.cli import Environment, main

MakeServer = Callable[..., SmtpServer]
FAST = ("--backoff", "0", "--timeout", "2")


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    return copy_bundled(tmp_path / "campaign")


# ---- nothing leaves from a placeholder --------------------------------------------------


@pytest.mark.parametrize("extra", [(), ("--test-to", "me@mep-letter.eu")])
def test_send_refuses_the_bundled_placeholder_sender(
    tmp_path: Path, smtp_server: SmtpServer, extra: tuple[str, ...]
) -> None:
    file = copy_bundled(tmp_path / "c", sender="campaign@example.org")
    run = send(file, smtp_server, *extra)
    assert run.status == 2
    assert "field 'campaign.from'" in run.err and "placeholder" in run.err
    assert smtp_server.sessions == 0
    assert not log_path(file).exists()


@pytest.mark.parametrize(
    "domain",
    [
        "example.com",
        "example.net",
        "news.example.org",
        "mail.example",
        "x.invalid",
        "a.test",
        "localhost",
    ],
)
def test_every_reserved_domain_is_refused_as_a_sender(
    tmp_path: Path, smtp_server: SmtpServer, domain: str
) -> None:
    file = copy_bundled(tmp_path / "c", sender=f"office@{domain}")
    run = send(file, smtp_server)
    assert run.status == 2 and "campaign.from" in run.err
    assert smtp_server.sessions == 0


def test_the_placeholder_is_named_even_without_a_terminal_to_confirm_on(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = copy_bundled(tmp_path / "c", sender="campaign@example.org")
    run = run_cli(file, "send", environ=smtp_environ(smtp_server))  # no --yes, no terminal
    assert run.status == 2 and "campaign.from" in run.err and "placeholder" in run.err


def test_the_plan_repeats_checks_warnings_before_the_question(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    seen: list[str] = []
    stdout = io.StringIO()

    def answer(question: str) -> str:
        seen.append(stdout.getvalue())
        return "n"

    env = Environment(
        stdout=stdout,
        stderr=io.StringIO(),
        stdin=io.StringIO(),
        environ=smtp_environ(smtp_server),
        terminal=False,
        prompt=answer,
    )
    assert main(["--file", str(bundled), "send"], env) == 1
    [before_question] = seen
    assert (
        "procuror@nursat.kz: 'procuror' looks like a misspelling of 'prokuror'" in before_question
    )
    assert "mbudsman@ombudsman.kz: 'mbudsman' looks like a misspelling of 'ombudsman'" in (
        before_question
    )


# ---- server-wide refusals are the run's ---------------------------------------------------


SENDER_REFUSED = (553, f"5.7.1 <{SENDER}>: Sender address rejected: not owned by user")


def test_a_sender_refused_at_rcpt_stops_the_run_and_leaves_everyone_pending(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    refusing = make_smtp_server(
        faults=FaultScript(rcpt={"aprk@akorda.kz": SENDER_REFUSED, "press@knb.kz": SENDER_REFUSED})
    )
    run = send(bundled, refusing, "--concurrency", "1", *FAST)
    assert run.status == 1
    assert "Sender address rejected" in run.err and "Traceback" not in run.err
    assert refusing.messages == []
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)
    fixed = make_smtp_server()
    again = send(bundled, fixed, *FAST)
    assert again.status == 0, again.stderr
    assert len(fixed.messages) == len(BUNDLED_IDS)


@pytest.mark.parametrize("reason", ["", "   "])
def test_resolve_without_a_reason_is_refused_and_records_nothing(
    bundled: Path, make_smtp_server: MakeServer, reason: str
) -> None:
    refusing = make_smtp_server(
        faults=FaultScript(rcpt={"aprk@akorda.kz": (550, "5.1.1 mailbox unavailable")})
    )
    assert send(bundled, refusing, *FAST).status == 1
    before = log_path(bundled).read_bytes()
    run = run_cli(bundled, "resolve", "president", "--as", "pending", "--reason", reason)
    assert run.status == 2
    assert "--reason is empty" in run.err and "Traceback" not in run.err
    assert log_path(bundled).read_bytes() == before
    assert status_of(bundled, "president") == "failed"


def test_failed_recipients_can_be_sent_again_after_resolve_by_status(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    refusing = make_smtp_server(
        faults=FaultScript(rcpt={"aprk@akorda.kz": (550, "5.1.1 mailbox unavailable")})
    )
    assert send(bundled, refusing, *FAST).status == 1
    assert status_of(bundled, "president") == "failed"
    resolved = run_cli(
        bundled, "resolve", "--status", "failed", "--as", "pending", "--reason", "fixed the relay"
    )
    assert resolved.status == 0, resolved.stderr
    assert "Recorded president as pending: fixed the relay" in resolved.out
    [record] = events(bundled, "resolve", "president")
    assert record["reason"] == "fixed the relay" and record["by"]
    server = make_smtp_server()
    again = send(bundled, server, *FAST)
    assert again.status == 0, again.stderr
    assert [m.rcpt_tos for m in server.messages] == [["aprk@akorda.kz"]]


def test_a_corrected_address_replaces_the_retired_one(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    refusing = make_smtp_server(
        faults=FaultScript(rcpt={"press@knb.kz": (550, "5.1.1 <press@knb.kz>: User unknown")})
    )
    assert send(bundled, refusing, *FAST).status == 1
    assert status_of(bundled, "national-security-committee") == "failed"
    bundled.write_text(
        bundled.read_text("utf-8").replace("press@knb.kz", "press@knb.gov.kz"), "utf-8"
    )
    server = make_smtp_server()
    run = send(bundled, server, "--allow-changes", *FAST)
    assert run.status == 0, run.stderr
    assert [m.rcpt_tos for m in server.messages] == [["press@knb.gov.kz"]]
    log = run_cli(bundled, "log")
    assert counts_line(log.stdout)["sent"] == len(BUNDLED_IDS)
    assert "check them" not in log.out
    history = run_cli(bundled, "log", "--history", "national-security-committee")
    assert "press@knb.kz" in history.out  # the retired address stays in the record


# ---- the server is met before the question ----------------------------------------------


def test_a_dead_server_is_found_before_the_question(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server()
    server.stop()
    run = run_cli(
        bundled, "send", "--retries", "1", *FAST, environ=smtp_environ(server), prompt=str
    )
    assert run.status == 2
    assert run.prompts == ()  # the question was never asked
    assert "connect failed" in run.err and "CAMPAIGN_SMTP_PORT" in run.err
    assert "trying again in" in run.err  # the wait is said, not silent
    assert not log_path(bundled).exists()


def test_starttls_against_an_implicit_tls_port_fails_fast_with_a_hint(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    implicit = make_smtp_server(implicit_tls_context=smtp_tls.server_context)
    extra = {"CAMPAIGN_SMTP_SECURITY": "starttls", "CAMPAIGN_SMTP_CA_FILE": str(smtp_tls.ca_file)}
    run = send(bundled, implicit, "--timeout", "1", "--backoff", "0", extra=extra)
    assert run.status == 2
    assert "set the security mode to tls" in run.err
    assert "trying again" not in run.err  # a silent server is not waited for again
    assert not log_path(bundled).exists()


def test_an_untrusted_certificate_points_at_the_ca_file(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = make_smtp_server(starttls_context=smtp_tls.server_context, require_starttls=True)
    run = send(bundled, server, *FAST, extra={"CAMPAIGN_SMTP_SECURITY": "starttls"})
    assert run.status == 2
    assert "tls failed" in run.err and "CAMPAIGN_SMTP_CA_FILE" in run.err


# ---- the review fits the terminal -------------------------------------------------------


def test_log_at_80_columns_shows_each_recipient_on_one_line(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server(
        faults=FaultScript(rcpt={"press@knb.kz": (550, "5.1.1 <press@knb.kz>: User unknown")})
    )
    send(bundled, server, *FAST)
    for width in (80, 100, 160):
        stdout = io.StringIO()
        env = Environment(
            stdout=stdout, stderr=io.StringIO(), environ={}, terminal=False, width=width
        )
        assert main(["--file", str(bundled), "log"], env) == 0
        lines = stdout.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        for rid in BUNDLED_IDS:
            [line] = [line for line in lines if re.search(rf"(^|\s){re.escape(rid)}\s", line)]
            status = "failed" if rid == "national-security-committee" else "sent"
            assert status in line
        assert ("Nursultan" in stdout.getvalue()) is (width == 160)


def test_log_written_to_a_file_follows_columns(bundled: Path, smtp_server: SmtpServer) -> None:
    send(bundled, smtp_server, *FAST)
    shown = run_cli(bundled, "log", environ={"COLUMNS": "80"})
    assert shown.status == 0
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for rid in BUNDLED_IDS:
        assert (
            len([line for line in lines if re.search(rf"(^|\s){re.escape(rid)}\s+sent", line)]) == 1
        )


def test_history_shows_the_message_id_and_marks_test_sends(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert (
        send(bundled, smtp_server, "--test-to", "me@mep-letter.eu", "--only", "president").status
        == 0
    )
    assert send(bundled, smtp_server, "--only", "president").status == 0
    shown = run_cli(bundled, "log", "--history", "president")
    assert "attempt (test)" in shown.stdout
    assert "Message-ID" in shown.stdout
    as_json = run_cli(bundled, "log", "--history", "president", "--json")
    records = [__import__("json").loads(line) for line in as_json.stdout.splitlines()]
    assert [r["event"] for r in records if r.get("test")] == ["attempt", "result"]
    [real] = [r for r in records if r["event"] == "attempt" and not r.get("test")]
    assert real["message_id"] == f"<kz-open-letter-2017-10.president@{SENDER.split('@')[1]}>"
    assert status_of(bundled, "president") == "sent"


def test_each_test_run_uses_a_new_message_id(bundled: Path, smtp_server: SmtpServer) -> None:
    for _ in range(2):
        assert (
            send(
                bundled, smtp_server, "--test-to", "me@mep-letter.eu", "--only", "president"
            ).status
            == 0
        )
    first, second = (m.data for m in smtp_server.messages)
    ids = [re.search(rb"Message-ID: (<[^>]+>)", data).group(1) for data in (first, second)]  # type: ignore[union-attr]
    assert ids[0] != ids[1] and all(i.startswith(b"<test.") for i in ids)


def test_log_csv_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    file = write_small_campaign(tmp_path / "c", 3000)  # far more than a pipe holds
    reader = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert reader.stdin is not None and reader.stdout is not None
    writer = subprocess.run(
        [sys.executable, "-m", "campaign", "--file", str(file), "log", "--csv"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        env=os.environ,
        timeout=120,
    )
    reader.stdin.close()
    out = reader.stdout.read()
    reader.wait(timeout=30)
    assert out.startswith(b"recipient,")
    assert writer.returncode == 0
    assert b"Traceback" not in writer.stderr and b"BrokenPipe" not in writer.stderr


def test_resolve_as_sent_keeps_the_attempts_sha256_and_archive(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    from smtp_server import DROP, nth

    server = make_smtp_server(faults=FaultScript(data=nth(1, DROP)))
    assert send(bundled, server, "--concurrency", "1", *FAST).status == 1
    assert status_of(bundled, "president") == "unknown"
    [attempt] = events(bundled, "attempt", "president")
    run = run_cli(bundled, "resolve", "president", "--as", "sent", "--reason", "queued as Q1")
    assert run.status == 0, run.stderr
    [record] = events(bundled, "resolve", "president")
    assert record["sha256"] == attempt["sha256"]
    archived = bundled.parent / "outbox" / record["archive"]
    assert archived.is_file()
    as_json = run_cli(bundled, "log", "--json", "--recipient", "president")
    row = __import__("json").loads(as_json.stdout)
    assert row["status"] == "sent" and row["sha256"] == attempt["sha256"]


# ---- the dry run fails as the send would, and says what each gets -------------------------


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CAMPAIGN_SMTP_PORT": "abc"}, "CAMPAIGN_SMTP_PORT"),
        ({"CAMPAIGN_SMTP_SECURITY": "ssl"}, "CAMPAIGN_SMTP_SECURITY"),
        ({"CAMPAIGN_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "CAMPAIGN_SMTP_CA_FILE"),
        ({"CAMPAIGN_SMTP_USERNAME": "me"}, "credentials never travel without TLS"),
    ],
)
def test_dry_run_fails_on_a_setting_the_send_would_refuse(
    bundled: Path, environ: dict[str, str], named: str
) -> None:
    base = {"CAMPAIGN_SMTP_HOST": "127.0.0.1", "CAMPAIGN_SMTP_SECURITY": "none"}
    run = run_cli(bundled, "send", "--dry-run", environ={**base, **environ})
    assert run.status == 2 and named in run.err
    assert "Traceback" not in run.stderr


def test_dry_run_fails_like_the_send_when_no_password_can_come_from_anywhere(
    bundled: Path, smtp_server: SmtpServer, smtp_tls: TlsFiles
) -> None:
    environ = {
        **smtp_environ(smtp_server),
        "CAMPAIGN_SMTP_SECURITY": "starttls",
        "CAMPAIGN_SMTP_USERNAME": "alice",
        "CAMPAIGN_SMTP_CA_FILE": str(smtp_tls.ca_file),
    }
    dry = run_cli(bundled, "send", "--dry-run", environ=environ)
    real = run_cli(bundled, "send", "--yes", environ=environ)
    assert dry.status == real.status == 2
    assert "a username is set but no password" in dry.err
    assert "a username is set but no password" in real.err
    assert smtp_server.sessions == 0


def test_log_counts_test_sends_apart(bundled: Path, smtp_server: SmtpServer) -> None:
    for _ in range(2):
        test = send(bundled, smtp_server, "--test-to", "me@mep-letter.eu", "--only", "president")
        assert test.status == 0, test.stderr
    shown = run_cli(bundled, "log")
    assert "test sends: 2 (--test-to)" in " ".join(shown.out.split())
    rows = {
        r["recipient"]: r
        for r in map(json.loads, run_cli(bundled, "log", "--json").stdout.splitlines())
    }
    assert rows["president"]["test_sends"] == 2 and rows["president"]["status"] == "pending"


def test_dry_run_lists_what_each_recipient_would_get(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server(
        faults=FaultScript(rcpt={"procuror@nursat.kz": (550, "5.1.1 no such user")})
    )
    assert send(bundled, server, "--only", "general-prosecutor", *FAST).status == 1
    run = send(bundled, server, "--dry-run")
    assert run.status == 0, run.stderr
    assert "general-prosecutor (partial): would try nothing" in run.out
    assert "skips Gp-rk@prokuror.kz: already accepted" in run.out
    assert "skips procuror@nursat.kz: refused: 550 5.1.1 no such user" in run.out
    assert "president (pending): would try aprk@akorda.kz" in run.out


# ---- polish -------------------------------------------------------------------------------


def test_one_letter_is_counted_in_the_singular(bundled: Path, smtp_server: SmtpServer) -> None:
    run = send(bundled, smtp_server, "--only", "president", "--dry-run")
    assert "1 letter to 1 address" in run.out
    assert "skipped 5 not in --only" in run.out


def test_send_help_lists_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    stdout = io.StringIO()
    env = Environment(stdout=stdout, stderr=io.StringIO(), environ={}, terminal=False)
    assert main(["send", "--help"], env) == 0
    for variable in ("CAMPAIGN_SMTP_HOST", "CAMPAIGN_SMTP_PASSWORD", "CAMPAIGN_SMTP_CA_FILE"):
        assert variable in stdout.getvalue()


def test_campaign_report_writes_the_page_with_the_logs_counts(
    bundled: Path, smtp_server: SmtpServer
) -> None:
    assert send(bundled, smtp_server).status == 0
    run = run_cli(bundled, "report")
    assert run.status == 0, run.stderr
    page = bundled.parent / "outbox" / "report.html"
    assert f"Wrote {page}: 6 recipients (6 sent)" in run.out
    html = page.read_text("utf-8")
    assert re.search(r'data-status="sent"[^>]*data-count="6"', html)
