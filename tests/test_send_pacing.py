"""Adaptive pacing against a real server that limits its clients like a provider does.

The test server (aiosmtpd on 127.0.0.1) lets messages through a token bucket and refuses
connections beyond a limit, with the replies real relays give. A default `campaign send`
must slow the whole run down, finish in one run, stay under `--rate` and `--concurrency`,
and give up after `--max-wait` with the rest deferred.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from send_helpers import events, log_path, read_log, send, write_small_campaign
from smtp_server import FaultScript, RateLimit, SmtpServer

from campaign.sendlog import replay

MakeServer = Callable[..., SmtpServer]


def status_of(file: Path, recipient: str) -> str:
    state = replay(log_path(file), "crash-test").recipients.get(recipient)
    return state.status() if state is not None else "pending"


def test_the_run_slows_to_the_servers_rate_and_finishes_in_one_run(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 40)
    server = make_smtp_server(rate_limit=RateLimit(per_minute=600, burst=5, connections=2))
    run = send(file, server, "--timeout", "5")
    assert run.status == 0, run.stderr
    delivered = Counter(a for m in server.messages for a in m.rcpt_tos)
    assert len(delivered) == 40 and set(delivered.values()) == {1}  # every one, once
    assert all(status_of(file, f"r{n:03d}") == "sent" for n in range(1, 41))
    rates = [p for p in events(file, "pace") if p["signal"] == "rate"]
    assert rates
    assert "451 4.7.1 Rate limited" in rates[0]["reply"]
    assert "slowed to" in rates[0]["message"]
    assert "pace: slowed to" in run.out  # shown as it happened
    attempts = len(events(file, "attempt"))
    assert server.refused_mail <= max(5, attempts // 5)  # few refusals once slowed down


def test_rate_and_concurrency_stay_ceilings(tmp_path: Path, make_smtp_server: MakeServer) -> None:
    file = write_small_campaign(tmp_path / "c", 12)
    server = make_smtp_server(rate_limit=RateLimit(per_minute=6000, burst=50, connections=8))
    run = send(file, server, "--rate", "240", "--concurrency", "2", "--timeout", "5")
    assert run.status == 0, run.stderr
    starts = server.let_through
    assert len(starts) == 12
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.25 * 0.8  # 240/min: a letter every 0.25 s, never faster
    assert server.most_connections <= 2 + 1  # the check before the question, then two


def test_a_connection_limit_is_learnt_not_retried_per_letter(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 20)
    server = make_smtp_server(rate_limit=RateLimit(per_minute=6000, burst=50, connections=1))
    run = send(file, server, "--concurrency", "4", "--timeout", "5")
    assert run.status == 0, run.stderr
    assert len(server.messages) == 20
    assert server.refused_connections <= 4
    assert any(p["signal"] == "connections" for p in events(file, "pace"))


def test_a_server_wide_4xx_at_mail_slows_the_run_instead_of_a_retry_per_letter(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 30)
    refusal = (450, "4.1.8 <sender@mep-letter.eu>: Sender address rejected: Domain not found")
    server = make_smtp_server(faults=FaultScript(mail=refusal))
    run = send(file, server, "--max-wait", "0.05", "--timeout", "5", "--backoff", "0.1")
    assert run.status == 1
    assert "nothing accepted for" in run.err
    assert server.messages == []
    # Per letter with --retries 3 this was 120 refused MAIL commands; paced, a handful.
    assert len(events(file, "attempt")) <= 15
    [first, *_] = events(file, "pace")
    assert "450 4.1.8" in first["reply"]
    statuses = Counter(status_of(file, f"r{n:03d}") for n in range(1, 31))
    assert statuses == {"deferred": 30}


def test_a_letter_too_large_for_the_servers_room_waits_alone(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 10)
    storage = (452, "4.3.1 Insufficient system storage")
    server = make_smtp_server(faults=FaultScript(mail=[storage]))  # the first MAIL only
    run = send(file, server, "--timeout", "5", "--backoff", "0.1")
    assert run.status == 0, run.stderr
    assert len(server.messages) == 10
    assert events(file, "pace") == []  # one letter's refusal does not slow the run


def test_after_max_wait_the_rest_is_deferred_with_the_reason(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "c", 8)
    # Two letters through, then nothing for minutes: the bucket hardly refills.
    server = make_smtp_server(rate_limit=RateLimit(per_minute=0.01, burst=2, connections=4))
    run = send(file, server, "--max-wait", "0.05", "--timeout", "5")  # 3 s
    assert run.status == 1
    assert "nothing accepted for" in run.err
    statuses = Counter(status_of(file, f"r{n:03d}") for n in range(1, 9))
    assert statuses["sent"] == 2 and statuses["deferred"] == 6
    # Each left letter says why: refused for the rate, or not tried before the run gave up.
    postponed = [r for r in read_log(file) if r["event"] == "postponed"]
    assert all("not tried: nothing accepted for" in r["reason"] for r in postponed)
    state = replay(log_path(file), "crash-test").recipients
    for n in range(1, 9):
        replies = [a.reply for a in state[f"r{n:03d}"].addresses] if f"r{n:03d}" in state else []
        assert replies and (
            all(r == "OK" for r in replies)
            or any("Rate limited" in r or "not tried" in r for r in replies)
        )
    assert len(server.messages) == 2
