"""The pacing rule: the reply table, and the Pacer driven by a fake clock."""

from __future__ import annotations

import itertools

import pytest

from campaign.pacing import RULES, Pacer, Signal, Slot, classify_reply, rule_for

RATE, CONNECTIONS, TEMPORARY, NONE = (
    Signal.RATE,
    Signal.CONNECTIONS,
    Signal.TEMPORARY,
    Signal.NONE,
)

# Real replies, from the servers' own documentation or source, or captured from a real
# Postfix 3.7 (smtpd_client_message_rate_limit = 10, smtpd_client_connection_count_limit = 2).
REPLIES = [
    # Postfix, captured: MAIL beyond the rate, a third connection, 20 errors in a session
    ("postfix-rate", 450, "4.7.1 Error: too much mail from 127.0.0.1", RATE),
    (
        "postfix-connections",
        421,
        "4.7.0 pacing.test.invalid Error: too many connections from 127.0.0.1",
        CONNECTIONS,
    ),
    ("postfix-errors", 421, "4.7.0 pacing.test.invalid Error: too many errors", RATE),
    ("postfix-recipient-rate", 450, "4.7.1 Error: too many recipients from 127.0.0.1", RATE),
    ("postfix-recipients-per-message", 452, "4.5.3 Error: too many recipients", TEMPORARY),
    ("postfix-lookup", 451, "4.3.0 <r@example.com>: Temporary lookup failure", TEMPORARY),
    ("postfix-storage", 452, "4.3.1 Insufficient system storage", TEMPORARY),
    (
        "postfix-sender-domain",
        450,
        "4.1.8 <campaign@example.org>: Sender address rejected: Domain not found",
        TEMPORARY,
    ),
    (
        "postgrey",
        450,
        "4.2.0 <r@example.com>: Recipient address rejected: Greylisted, see"
        " http://postgrey.schweikert.ch/help/example.com.html",
        TEMPORARY,
    ),
    ("milter-greylist", 451, "4.7.1 Greylisting in action, please come back later", TEMPORARY),
    ("mailbox-busy", 451, "4.3.0 mailbox busy", TEMPORARY),
    # Microsoft 365 / Exchange Online
    (
        "m365-thread-limit",
        432,
        "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        CONNECTIONS,
    ),
    (
        "m365-concurrent",
        432,
        "4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending"
        " for more information.",
        CONNECTIONS,
    ),
    (
        "m365-server-busy",
        451,
        "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714)",
        RATE,
    ),
    ("m365-421", 421, "4.7.0 Temporary server error. Please try again later.", RATE),
    # Gmail / Google Workspace
    (
        "gmail-unusual-rate",
        421,
        "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail"
        " originating from your IP address. To protect our users from spam, mail sent from"
        " your IP address has been temporarily rate limited. - gsmtp",
        RATE,
    ),
    ("gmail-451", 451, "4.7.28 Gmail has detected an unusual rate of mail - gsmtp", RATE),
    ("gmail-relay-limit", 450, "4.2.1 Peak SMTP relay limit exceeded for this customer.", RATE),
    (
        "gmail-recipient-too-fast",
        450,
        "4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend"
        " your message at a later time.",
        TEMPORARY,
    ),
    # Exim
    (
        "exim-accept-max",
        421,
        "mx.example.net: Too many concurrent SMTP connections; please try again later",
        CONNECTIONS,
    ),
    (
        "exim-per-host",
        421,
        "Too many concurrent SMTP connections from this IP address; please try again later.",
        CONNECTIONS,
    ),
    ("exim-temporary", 451, "Temporary local problem - please try later", RATE),
    # ISPs and services
    (
        "yahoo",
        421,
        "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume"
        " or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        RATE,
    ),
    ("ses-rate", 454, "Throttling failure: Maximum sending rate exceeded", RATE),
    ("ses-connections", 421, "Too many concurrent SMTP connections", CONNECTIONS),
    ("per-second", 452, "4.4.5 Messages per second limit exceeded", RATE),
    (
        "policyd",
        450,
        "4.7.1 <campaign@example.org>: Sender address rejected: Deferring: Too many messages"
        " from sender in last 60",
        RATE,
    ),
    ("bench-sink", 451, "4.7.1 rate limited, try again later", RATE),
    ("bare-421", 421, "Service not available, closing transmission channel", RATE),
    ("bare-policy", 450, "4.7.1 Client host rejected: cannot find your hostname", RATE),
    ("bare-451", 451, "Requested action aborted: local error in processing", TEMPORARY),
    # Not temporary: pacing has nothing to do
    ("accepted", 250, "2.0.0 Ok: queued as 4BC2F1E0A1", NONE),
    ("permanent-rate", 550, "5.4.5 Daily user sending quota exceeded.", NONE),
    ("permanent-user", 550, "5.1.1 <r@example.com>: Recipient address rejected", NONE),
    ("no-reply", None, "connection lost", TEMPORARY),
]


@pytest.mark.parametrize(
    ("code", "text", "expected"), [r[1:] for r in REPLIES], ids=[r[0] for r in REPLIES]
)
def test_reply_is_classified_by_the_table(code: int | None, text: str, expected: Signal) -> None:
    assert classify_reply(code, text) == expected


def test_every_line_of_the_table_is_used_by_a_real_reply() -> None:
    used = {rule_for(code, text) for _, code, text, _ in REPLIES if code and 400 <= code < 500}
    assert {rule.name for rule in RULES} == {rule.name for rule in used if rule is not None}


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def book(pacer: Pacer, clock: Clock) -> Slot:
    """Wait as told until a slot is booked, as one connection of the send loop does."""
    slot = pacer.reserve()
    while not slot.booked:
        assert 0 < slot.wait <= 0.5
        clock.advance(slot.wait)
        slot = pacer.reserve()
    return slot


def test_without_limits_every_slot_starts_at_once() -> None:
    clock = Clock()
    pacer = Pacer(connections=4, clock=clock)
    slots = [pacer.reserve() for _ in range(100)]
    assert all(slot.booked for slot in slots)
    assert pacer.pace.per_minute is None and pacer.connections == 4


def test_rate_ceiling_spaces_starts_evenly() -> None:
    clock = Clock()
    pacer = Pacer(rate=30, clock=clock)
    starts = []
    for _ in range(10):
        book(pacer, clock)
        starts.append(clock.now)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(starts)}
    assert gaps == {2.0}


def test_rate_ceiling_holds_through_refusals_and_recovery() -> None:
    clock = Clock()
    pacer = Pacer(rate=60, connections=3, clock=clock)
    starts: list[float] = []
    for i in range(400):
        slot = book(pacer, clock)
        starts.append(clock.now)
        clock.advance(0.01)
        if i % 7 == 3:
            pacer.refused(slot, 451, "4.7.1 rate limited, try again later")
        else:
            pacer.accepted(slot)
    for i, start in enumerate(starts):
        in_a_minute = [s for s in starts[i:] if s < start + 60.0]
        assert len(in_a_minute) <= 60
    assert (pacer.pace.per_minute or 0) <= 60.0


def test_connections_never_exceed_the_ceiling() -> None:
    clock = Clock()
    pacer = Pacer(connections=3, clock=clock)
    assert pacer.connections == 3
    pacer.connection_refused(421, "4.7.0 too many connections", open_connections=5)
    assert pacer.connections == 3
    for _ in range(200):
        slot = book(pacer, clock)
        clock.advance(0.5)
        pacer.accepted(slot)
        assert 1 <= pacer.connections <= 3


def test_rate_refusal_slows_the_whole_run_and_says_why() -> None:
    clock = Clock()
    pacer = Pacer(connections=1, clock=clock)
    slots = [pacer.reserve() for _ in range(20)]
    for slot in slots[:19]:
        pacer.accepted(slot)
    signal, change = pacer.refused(slots[19], 451, "4.7.1 rate limited, try again later")
    assert signal == Signal.RATE
    assert change is not None
    assert change.before.per_minute is None
    assert change.after.per_minute == pytest.approx(19 / 10 * 60)  # 19 accepted in 10 s
    assert change.message == "slowed to 114/min: 451 4.7.1 rate limited, try again later"
    assert not pacer.reserve().booked  # every connection waits now


def test_a_refusal_before_anything_got_through_again_says_it_waits_not_slows() -> None:
    clock = Clock()
    pacer = Pacer(connections=1, clock=clock)
    slots = [pacer.reserve() for _ in range(11)]
    for slot in slots[:10]:
        pacer.accepted(slot)
    _, first = pacer.refused(slots[10], 450, "4.7.1 Error: too much mail from 127.0.0.1")
    assert first is not None and first.message.startswith("slowed to ")
    clock.advance(60)
    _, again = pacer.refused(book(pacer, clock), 450, "4.7.1 Error: too much mail")
    assert again is not None
    assert again.after.per_minute == first.after.per_minute
    assert again.message.startswith("waiting ")
    assert again.message.endswith(": 450 4.7.1 Error: too much mail")


def test_refusals_booked_before_the_slow_down_do_not_slow_it_again() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    in_flight = [pacer.reserve() for _ in range(4)]
    pacer.accepted(pacer.reserve())
    _, first = pacer.refused(in_flight[0], 451, "4.7.1 rate limited")
    paces = [pacer.pace]
    for slot in in_flight[1:]:
        _, change = pacer.refused(slot, 451, "4.7.1 rate limited")
        assert change is None
        paces.append(pacer.pace)
    assert first is not None and len(set(paces)) == 1


def test_ordinary_temporary_failure_leaves_the_pace_alone() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    signal, change = pacer.refused(pacer.reserve(), 450, "4.2.0 Greylisted, see postgrey")
    assert (signal, change) == (Signal.TEMPORARY, None)
    assert pacer.pace.per_minute is None and pacer.reserve().booked


def test_pace_grows_back_after_a_refusal() -> None:
    clock = Clock()
    pacer = Pacer(rate=600, clock=clock)
    slot = book(pacer, clock)
    pacer.accepted(slot)
    _, change = pacer.refused(book(pacer, clock), 451, "4.7.1 rate limited")
    assert change is not None and change.after.per_minute == pytest.approx(300)
    speeds = []
    for _ in range(300):
        slot = book(pacer, clock)
        clock.advance(0.01)
        speeds.append(pacer.accepted(slot))
    assert pacer.pace.per_minute == 600  # back to the ceiling, never beyond
    assert any(s is not None and s.message.startswith("sped up to") for s in speeds)


def test_connection_refused_with_others_open_sets_the_connection_limit() -> None:
    clock = Clock()
    pacer = Pacer(connections=4, clock=clock)
    change = pacer.connection_refused(
        421, "4.7.0 mx.example.org Error: too many connections from 127.0.0.1", open_connections=2
    )
    assert pacer.connections == 2
    assert change is not None and change.signal == Signal.CONNECTIONS
    assert change.message.startswith("fewer connections: no rate limit, 2 connections: 421 ")
    assert pacer.connection_refused(421, "too many connections", open_connections=2) is None


def test_connection_failure_without_a_reply_and_none_open_is_not_a_limit() -> None:
    clock = Clock()
    pacer = Pacer(connections=4, clock=clock)
    assert pacer.connection_refused(None, "Connection refused", open_connections=0) is None
    assert pacer.connections == 4 and pacer.reserve().booked


def test_limit_reply_with_none_open_holds_the_run_back() -> None:
    clock = Clock()
    pacer = Pacer(connections=4, clock=clock)
    change = pacer.connection_refused(
        421, "Too many concurrent SMTP connections", open_connections=0
    )
    assert change is not None and change.message.startswith("waiting ")
    assert pacer.connections == 1
    assert not pacer.reserve().booked


def test_rate_refusals_are_retried_as_the_pace_allows_within_the_budget() -> None:
    clock = Clock()
    pacer = Pacer(max_wait=600, clock=clock)
    first = clock.now
    assert pacer.retry_after(Signal.RATE, 1, first) == 0.0
    assert pacer.retry_after(Signal.CONNECTIONS, 9, first) == 0.0
    clock.advance(601)
    assert pacer.retry_after(Signal.RATE, 10, first) is None


def test_other_temporary_failures_back_off_and_stop_after_retries() -> None:
    clock = Clock()
    pacer = Pacer(retries=3, backoff=2.0, max_wait=1800, clock=clock)
    delays = [pacer.retry_after(Signal.TEMPORARY, tries, clock.now) for tries in (1, 2, 3, 4)]
    assert delays == [2.0, 4.0, 8.0, None]
    assert pacer.retry_after(Signal.NONE, 1, clock.now) is None


def test_run_gives_up_after_max_wait_without_an_accepted_message() -> None:
    clock = Clock()
    pacer = Pacer(max_wait=1800, clock=clock)
    pacer.accepted(pacer.reserve())
    pacer.refused(pacer.reserve(), 450, "4.7.1 Error: too much mail from 127.0.0.1")
    tries = 1
    while pacer.stalled() is None:
        slot = book(pacer, clock)
        pacer.refused(slot, 450, "4.7.1 Error: too much mail from 127.0.0.1")
        tries += 1
    assert clock.now - 1000.0 >= 1800
    assert tries < 40  # the pauses between tries grew: no hammering
    assert clock.now - 1000.0 < 1800 + 1
    assert pacer.stalled() == (
        "nothing accepted for 30 min (--max-wait); last reply: 450 4.7.1 Error: too much"
        " mail from 127.0.0.1"
    )


def test_accepted_message_resets_the_budget() -> None:
    clock = Clock()
    pacer = Pacer(max_wait=60, clock=clock)
    pacer.refused(pacer.reserve(), 451, "4.7.1 rate limited")
    clock.advance(59)
    pacer.accepted(book(pacer, clock))
    clock.advance(30)
    assert pacer.stalled() is None


def test_reply_in_a_change_is_one_printable_line() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.accepted(pacer.reserve())
    _, change = pacer.refused(pacer.reserve(), 451, "4.7.1 rate\r\nlimited\x1b[31m " + "x" * 300)
    assert change is not None
    assert change.reply.startswith("451 4.7.1 rate limited [31m")
    assert change.reply.isprintable() and len(change.reply) <= 160


def test_change_gives_the_fields_of_a_log_event() -> None:
    clock = Clock()
    pacer = Pacer(connections=2, clock=clock)
    slot = pacer.reserve()
    clock.advance(0.2)  # the message took 0.2 s
    pacer.accepted(slot)
    _, change = pacer.refused(pacer.reserve(), 450, "4.7.1 Error: too much mail from 127.0.0.1")
    assert change is not None
    assert change.fields() == {
        "per_minute": 6.0,
        "connections": 2,
        "before_per_minute": None,
        "before_connections": 2,
        "signal": "rate",
        "reply": "450 4.7.1 Error: too much mail from 127.0.0.1",
        "message": "slowed to 6/min: 450 4.7.1 Error: too much mail from 127.0.0.1",
    }
    assert change.after.describe() == "6/min over 2 connections"
