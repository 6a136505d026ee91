"""`campaign send` against a server that injects faults: outcomes, log records, exit statuses.

The server is the real aiosmtpd test server with a FaultScript (tests/smtp_server.py); the
bundled campaign is sent to it on 127.0.0.1.  `--backoff 0` and short timeouts keep retries
fast; `--concurrency 1` where the test needs to know which message meets the fault.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from send_helpers import (
    ALL_ADDRESSES,
    BUNDLED_IDS,
    FIXED_NOW,
    SENDER,
    by_recipient,
    copy_bundled,
    deliveries,
    events,
    files_in,
    log_path,
    rcpt_commands,
    recipient_of,
    run_cli,
    send,
    sha256,
    states,
    status_of,
)
from smtp_server import DROP, STALL, FaultScript, SmtpServer, nth

MakeServer = Callable[..., SmtpServer]
FAST = ("--backoff", "0", "--timeout", "2")
SERIAL = ("--concurrency", "1", *FAST)


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    return copy_bundled(tmp_path / "campaign")


def faulty(make_smtp_server: MakeServer, **script: object) -> SmtpServer:
    return make_smtp_server(faults=FaultScript(**script))  # type: ignore[arg-type]


def replies(file: Path, recipient: str) -> list[dict[str, dict[str, object]]]:
    return [record["replies"] for record in events(file, "result", recipient)]


# ---- temporary refusals: retried within the run --------------------------------------------


def test_451_on_one_rcpt_is_retried_to_that_address_alone(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, rcpt={"procuror@nursat.kz": [(451, "4.7.1 Greylisted")]})
    run = send(bundled, server, *FAST)
    assert run.status == 0, run.stderr
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}
    first, second = by_recipient(server)["general-prosecutor"]
    assert first.rcpt_tos == ["Gp-rk@prokuror.kz"]
    assert second.rcpt_tos == ["procuror@nursat.kz"]
    assert second.data == first.data  # same bytes, same Message-ID
    attempts = events(bundled, "attempt", "general-prosecutor")
    assert [(a["attempt"], a["addresses"]) for a in attempts] == [
        (1, ["Gp-rk@prokuror.kz", "procuror@nursat.kz"]),
        (2, ["procuror@nursat.kz"]),
    ]
    assert replies(bundled, "general-prosecutor")[0]["procuror@nursat.kz"] == {
        "outcome": "deferred",
        "code": 451,
        "reply": "4.7.1 Greylisted",
    }
    assert status_of(bundled, "general-prosecutor") == "sent"


def test_a_deferred_message_is_retried_after_the_messages_not_yet_tried(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    first_address = ALL_ADDRESSES[0]
    server = faulty(make_smtp_server, rcpt={first_address: [(451, "4.7.1 Greylisted")]})
    run = send(bundled, server, *SERIAL)
    assert run.status == 0, run.stderr
    order = [recipient_of(message.rcpt_tos[0]) for message in server.messages]
    assert order == [*BUNDLED_IDS[1:], BUNDLED_IDS[0]]


def test_451_forever_is_deferred_after_the_retries(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, rcpt={"aprk@akorda.kz": (451, "4.3.0 Try again later")})
    run = send(bundled, server, "--retries", "2", *FAST)
    assert run.status == 1
    assert "1 deferred" in run.out
    assert "run `campaign send` again later" in run.out
    assert rcpt_commands(server, "aprk@akorda.kz") == 3
    assert [a["attempt"] for a in events(bundled, "attempt", "president")] == [1, 2, 3]
    assert status_of(bundled, "president") == "deferred"
    assert "aprk@akorda.kz" not in deliveries(server)
    assert len(server.messages) == 5


def test_a_deferred_recipient_is_sent_by_the_next_run(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    greylisting = faulty(make_smtp_server, rcpt={"aprk@akorda.kz": (451, "4.3.0 Try later")})
    assert send(bundled, greylisting, "--retries", "1", *FAST).status == 1
    server = make_smtp_server()
    run = send(bundled, server, *FAST)
    assert run.status == 0, run.stderr
    assert [m.rcpt_tos for m in server.messages] == [["aprk@akorda.kz"]]
    assert events(bundled, "attempt", "president")[-1]["attempt"] == 3
    assert status_of(bundled, "president") == "sent"


def test_next_run_sends_only_the_deferred_address_with_the_same_bytes(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    greylisting = faulty(make_smtp_server, rcpt={"procuror@nursat.kz": (451, "4.7.1 Later")})
    first = send(bundled, greylisting, "--retries", "0", *FAST, clock=FIXED_NOW)
    assert first.status == 1
    assert status_of(bundled, "general-prosecutor") == "deferred"
    [accepted] = by_recipient(greylisting)["general-prosecutor"]
    assert accepted.rcpt_tos == ["Gp-rk@prokuror.kz"]
    server = make_smtp_server()
    later = FIXED_NOW + timedelta(days=1)
    run = send(bundled, server, *FAST, clock=later)
    assert run.status == 0, run.stderr
    [retried] = server.messages
    assert retried.rcpt_tos == ["procuror@nursat.kz"]
    assert retried.data == accepted.data  # not rendered again with a new Date
    assert status_of(bundled, "general-prosecutor") == "sent"
    last = events(bundled, "attempt", "general-prosecutor")[-1]
    assert last["sha256"] == sha256(retried.data)
    assert last["message_id"] == "<kz-open-letter-2017-10.general-prosecutor@mep-letter.eu>"


def test_a_resumed_partial_whose_archive_is_gone_logs_the_hash_of_what_it_sent(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    greylisting = faulty(make_smtp_server, rcpt={"procuror@nursat.kz": (451, "4.7.1 Later")})
    assert send(bundled, greylisting, "--retries", "0", *FAST, clock=FIXED_NOW).status == 1
    [first] = events(bundled, "result", "general-prosecutor")
    (bundled.parent / "outbox" / first["archive"]).unlink()
    server = make_smtp_server()
    run = send(bundled, server, *FAST, clock=FIXED_NOW + timedelta(days=1))
    assert run.status == 0, run.stderr
    [retried] = server.messages
    [attempt] = events(bundled, "attempt", "general-prosecutor")[-1:]
    [result] = events(bundled, "result", "general-prosecutor")[-1:]
    assert attempt["sha256"] == result["sha256"] == sha256(retried.data)
    archived = bundled.parent / "outbox" / result["archive"]
    assert archived.read_bytes() == retried.data


def test_421_on_mail_reconnects_and_sends(bundled: Path, make_smtp_server: MakeServer) -> None:
    server = faulty(make_smtp_server, mail=nth(2, (421, "4.3.2 Service shutting down")))
    run = send(bundled, server, *SERIAL)
    assert run.status == 0, run.stderr
    assert server.sessions == 1 + 2  # the check before the question, then the run's two
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}
    [failed, sent] = events(bundled, "result", "general-prosecutor")
    assert {r["code"] for r in failed["replies"].values()} == {421}
    assert {r["outcome"] for r in failed["replies"].values()} == {"deferred"}
    assert sent["attempt"] == 2
    assert "(2 connections)" in run.out


def test_421_on_rcpt_reconnects_and_sends(bundled: Path, make_smtp_server: MakeServer) -> None:
    server = faulty(make_smtp_server, rcpt={"press@knb.kz": [(421, "4.3.2 Service shutting down")]})
    run = send(bundled, server, *SERIAL)
    assert run.status == 0, run.stderr
    assert server.sessions == 1 + 2
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}
    assert [a["attempt"] for a in events(bundled, "attempt", "national-security-committee")] == [
        1,
        2,
    ]


def test_connection_dropped_before_data_is_retried(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, mail=nth(1, DROP))
    run = send(bundled, server, *SERIAL)
    assert run.status == 0, run.stderr
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}
    [lost, _] = events(bundled, "result", "president")
    assert lost["replies"]["aprk@akorda.kz"]["outcome"] == "deferred"
    assert "connection lost" in lost["replies"]["aprk@akorda.kz"]["reply"]


def test_no_answer_to_mail_within_the_timeout_is_retried(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, mail=nth(1, STALL))
    run = send(bundled, server, "--concurrency", "1", "--backoff", "0", "--timeout", "0.5")
    assert run.status == 0, run.stderr
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}
    assert len(events(bundled, "attempt", "president")) == 2


def test_a_server_that_is_not_listening_stops_the_run_with_everyone_pending(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server()
    server.stop()  # its port, on 127.0.0.1, now refuses connections
    run = send(bundled, server, "--retries", "1", *FAST)
    assert run.status == 2
    assert "connect failed: cannot connect to 127.0.0.1" in run.err
    assert not log_path(bundled).exists()  # nothing recorded against anyone


# ---- permanent refusals: recorded, not retried ----------------------------------------------


def test_550_on_one_of_two_addresses_is_partial(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, rcpt={"procuror@nursat.kz": (550, "5.1.1 No such user")})
    run = send(bundled, server, *FAST)
    assert run.status == 1
    [message] = by_recipient(server)["general-prosecutor"]
    assert message.rcpt_tos == ["Gp-rk@prokuror.kz"]
    assert rcpt_commands(server, "procuror@nursat.kz") == 1
    [result] = events(bundled, "result", "general-prosecutor")
    assert result["replies"] == {
        "Gp-rk@prokuror.kz": {"outcome": "accepted", "code": 250, "reply": "OK"},
        "procuror@nursat.kz": {"outcome": "refused", "code": 550, "reply": "5.1.1 No such user"},
    }
    assert result["status"] == "partial"
    assert status_of(bundled, "general-prosecutor") == "partial"
    assert "1 partial" in run.out and "5 sent" in run.out


def test_a_refused_address_is_not_retried_by_the_next_run(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, rcpt={"procuror@nursat.kz": (550, "5.1.1 No such user")})
    assert send(bundled, server, *FAST).status == 1
    again = send(bundled, server, *FAST)
    assert again.status == 1
    assert "Nothing to send" in again.out
    assert rcpt_commands(server, "procuror@nursat.kz") == 1
    assert len(server.messages) == 6


def test_550_on_every_address_of_a_recipient_is_failed(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    refusal = (550, "5.1.1 No such user")
    server = faulty(
        make_smtp_server, rcpt={"info@ombudsman.kz": refusal, "mbudsman@ombudsman.kz": refusal}
    )
    run = send(bundled, server, *FAST)
    assert run.status == 1
    assert "ombudsman" not in by_recipient(server)
    assert status_of(bundled, "ombudsman") == "failed"
    assert len(events(bundled, "attempt", "ombudsman")) == 1
    assert "1 failed" in run.out


def test_554_on_data_is_failed_and_not_retried(bundled: Path, make_smtp_server: MakeServer) -> None:
    server = faulty(make_smtp_server, data=nth(1, (554, "5.6.0 Message content rejected")))
    run = send(bundled, server, *SERIAL)
    assert run.status == 1
    [rejected] = server.rejected
    assert rejected.rcpt_tos == ["aprk@akorda.kz"]
    assert "president" not in by_recipient(server)
    assert len(server.messages) == 5
    [result] = events(bundled, "result", "president")
    assert result["replies"] == {
        "aprk@akorda.kz": {
            "outcome": "refused",
            "code": 554,
            "reply": "5.6.0 Message content rejected",
        }
    }
    assert result["status"] == "failed"
    assert "archive" not in result
    assert status_of(bundled, "president") == "failed"
    assert not (bundled.parent / "outbox" / "sent" / "01-president.eml").exists()
    assert "1 failed" in run.out


def test_a_failed_recipient_is_not_retried_by_the_next_run(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, data=nth(1, (554, "5.6.0 Message content rejected")))
    assert send(bundled, server, *SERIAL).status == 1
    again = send(bundled, server, *SERIAL)
    assert again.status == 1
    assert "Nothing to send" in again.out
    assert len(server.rejected) == 1 and len(server.messages) == 5


# ---- lost after the data: unknown ----------------------------------------------------------


def test_connection_dropped_after_data_is_unknown(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, data=nth(1, DROP))
    run = send(bundled, server, *SERIAL)
    assert run.status == 1
    assert server.received_by("aprk@akorda.kz")  # the server did take it
    assert status_of(bundled, "president") == "unknown"
    [result] = events(bundled, "result", "president")
    assert result["replies"]["aprk@akorda.kz"]["outcome"] == "unknown"
    assert result["replies"]["aprk@akorda.kz"]["code"] is None
    assert result["status"] == "unknown"
    assert "1 unknown" in run.out
    assert "the server may have it" in run.out
    assert all(status_of(bundled, rid) == "sent" for rid in BUNDLED_IDS[1:])


def test_no_answer_after_data_within_the_timeout_is_unknown(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, data=nth(1, STALL))
    run = send(bundled, server, "--concurrency", "1", "--backoff", "0", "--timeout", "0.5")
    assert run.status == 1
    assert status_of(bundled, "president") == "unknown"
    assert len(server.received_by("aprk@akorda.kz")) == 1
    assert len(server.messages) == 6
    assert "1 unknown" in run.out


def test_an_unknown_recipient_is_not_resent_by_the_next_run(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, data=nth(1, DROP))
    assert send(bundled, server, *SERIAL).status == 1
    sessions = server.sessions
    again = send(bundled, server, *SERIAL)
    assert again.status == 1
    assert "1 recipient(s) are unknown" in again.out
    assert "--retry-unknown" in again.out
    assert len(server.received_by("aprk@akorda.kz")) == 1
    assert server.sessions == sessions


def test_a_run_that_skips_unknown_recipients_exits_1(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, data=nth(1, DROP))
    assert send(bundled, server, "--only", "president", "ombudsman", *SERIAL).status == 1
    assert status_of(bundled, "president") == "unknown"
    run = send(bundled, server, *SERIAL)  # sends the four others, skips the unknown one
    assert len(server.messages) == 6
    assert "1 recipient(s) are unknown" in run.out
    assert run.status == 1


def test_retry_unknown_sends_it_again(bundled: Path, make_smtp_server: MakeServer) -> None:
    server = faulty(make_smtp_server, data=nth(1, DROP))
    assert send(bundled, server, *SERIAL).status == 1
    [first] = server.received_by("aprk@akorda.kz")
    run = send(bundled, server, "--retry-unknown", *SERIAL)
    assert run.status == 0, run.stderr
    [_, second] = server.received_by("aprk@akorda.kz")
    assert second.data == first.data
    assert status_of(bundled, "president") == "sent"
    assert [a["attempt"] for a in events(bundled, "attempt", "president")] == [1, 2]
    assert len(server.messages) == 7


# ---- campaign resolve ----------------------------------------------------------------------


def test_resolve_as_sent_settles_an_unknown(bundled: Path, make_smtp_server: MakeServer) -> None:
    server = faulty(make_smtp_server, data=nth(1, DROP))
    assert send(bundled, server, *SERIAL).status == 1
    run = run_cli(bundled, "resolve", "president", "--as", "sent", "--reason", "queued as 4XyZ")
    assert run.status == 0, run.stderr
    assert "Recorded president as sent: queued as 4XyZ" in run.out
    [record] = events(bundled, "resolve", "president")
    assert record["as"] == "sent" and record["reason"] == "queued as 4XyZ"
    assert status_of(bundled, "president") == "sent"
    again = send(bundled, server, *SERIAL)
    assert again.status == 0, again.stderr
    assert "Nothing to send" in again.out
    assert len(server.received_by("aprk@akorda.kz")) == 1


def test_resolve_is_an_event_not_a_rewrite(bundled: Path, make_smtp_server: MakeServer) -> None:
    server = faulty(make_smtp_server, data=nth(1, DROP))
    assert send(bundled, server, *SERIAL).status == 1
    log = bundled.parent / "outbox" / "send-log.jsonl"
    before = log.read_bytes()
    assert run_cli(bundled, "resolve", "president", "--as", "sent", "--reason", "ok").status == 0
    after = log.read_bytes()
    assert after.startswith(before)
    assert after[len(before) :].count(b"\n") == 1


def test_resolve_as_pending_has_the_next_run_send_it(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, data=nth(1, DROP))
    assert send(bundled, server, *SERIAL).status == 1
    reason = "not in the server log"
    assert (
        run_cli(bundled, "resolve", "president", "--as", "pending", "--reason", reason).status == 0
    )
    assert status_of(bundled, "president") == "pending"
    run = send(bundled, server, *SERIAL)
    assert run.status == 0, run.stderr
    assert len(server.received_by("aprk@akorda.kz")) == 2
    assert status_of(bundled, "president") == "sent"


@pytest.mark.parametrize("recipient", ["president", "ombudsman"])
def test_resolve_refuses_a_recipient_that_is_not_unknown(
    bundled: Path, make_smtp_server: MakeServer, recipient: str
) -> None:
    server = faulty(make_smtp_server)
    assert send(bundled, server, "--only", "president", *FAST).status == 0
    log = bundled.parent / "outbox" / "send-log.jsonl"
    before = log.read_bytes()
    run = run_cli(bundled, "resolve", recipient, "--as", "sent", "--reason", "checked")
    assert run.status == 2
    expected = "sent" if recipient == "president" else "pending"
    assert f"recipient '{recipient}' is {expected}; only a recipient who is unknown" in run.err
    assert log.read_bytes() == before


# ---- what concerns every message: the run stops --------------------------------------------


def test_550_on_mail_stops_the_run_leaving_the_rest_pending(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, mail=(550, "5.7.1 Sender rejected"))
    run = send(bundled, server, *FAST)  # four connections allowed; one MAIL is enough
    assert run.status == 1
    assert f"stopped: smtp://{server.host}:{server.port} refused the sender" in run.err
    assert "the run stopped" not in run.err
    assert f"refused the sender {SENDER} or this client for every recipient" in run.err
    assert "550 5.7.1 Sender rejected" in run.err
    assert "no recipient was counted as failed" in run.err
    assert sum(1 for _, line in server.commands if line.startswith("MAIL")) == 1
    assert server.messages == [] and server.rejected == []
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)
    [result] = events(bundled, "result", "president")
    assert result["replies"]["aprk@akorda.kz"]["code"] == 550
    [end] = events(bundled, "run-end")
    assert "refused the sender" in end["stopped"]


def test_a_stopped_run_is_resumed_by_the_next_run(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    refusing = faulty(make_smtp_server, mail=(550, "5.7.1 Sender rejected"))
    assert send(bundled, refusing, *FAST).status == 1
    server = make_smtp_server()
    run = send(bundled, server, *FAST)
    assert run.status == 0, run.stderr
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}


def test_554_greeting_stops_the_run_with_nothing_sent(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, greeting=(554, "5.3.2 No SMTP service here"))
    run = send(bundled, server, *FAST)
    assert run.status == 2
    assert "refused the session: 554 5.3.2 No SMTP service here" in run.err
    assert server.sessions == 1
    assert server.messages == []
    assert not [line for _, line in server.commands if line.startswith("MAIL")]
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)
    assert files_in(bundled.parent / "outbox" / "sent") == {}


def test_421_greeting_is_retried(bundled: Path, make_smtp_server: MakeServer) -> None:
    server = faulty(make_smtp_server, greeting=[(421, "4.3.2 Too busy")])
    run = send(bundled, server, *SERIAL)
    assert run.status == 0, run.stderr
    assert server.sessions == 3  # refused, then the check before the question, then the run
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}


def test_archive_hash_matches_the_bytes_after_a_retry(
    bundled: Path, make_smtp_server: MakeServer
) -> None:
    server = faulty(make_smtp_server, rcpt={"aprk@akorda.kz": [(451, "4.7.1 Greylisted")]})
    assert send(bundled, server, *FAST).status == 0
    [message] = server.received_by("aprk@akorda.kz")
    [*_, result] = events(bundled, "result", "president")
    archived = (bundled.parent / "outbox" / result["archive"]).read_bytes()
    assert archived == message.data
    state = states(bundled).recipients["president"]
    assert state.sha256 == sha256(archived)
