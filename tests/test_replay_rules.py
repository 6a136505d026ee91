"""What the replayed history concludes from a log's records, record by record.

The records are made by the log's own record builders, as `campaign send`, `resolve` and
`inbox` write them; each test folds one recipient's story and reads the conclusion.
"""

from __future__ import annotations

from collections.abc import Mapping

from campaign.sendlog import (
    AddressReply,
    Event,
    Outcome,
    Record,
    Replay,
    Status,
    attempt_record,
    inbound_record,
    resolve_record,
    result_record,
)

CAMPAIGN = "replay-rules"
HASH = "0" * 64


def fold(*records: Record) -> Replay:
    history = Replay()
    for number, record in enumerate(records):
        history.fold({**record, "campaign": CAMPAIGN, "time": f"2030-01-01T00:00:{number:02d}Z"})
    return history


def attempt(recipient: str, addresses: list[str], all_addresses: list[str], n: int) -> Record:
    return attempt_record(
        run=f"run{n}",
        recipient=recipient,
        addresses=addresses,
        all_addresses=all_addresses,
        message_id=f"<{recipient}@example.net>",
        attempt=n,
        content_hash=HASH,
        sha256=HASH,
        size=100,
        transport="smtp://127.0.0.1:25",
    )


Answer = tuple[Outcome, int | None, str]


def result(recipient: str, n: int, replies: Mapping[str, Answer]) -> Record:
    return result_record(
        run=f"run{n}",
        recipient=recipient,
        attempt=n,
        message_id=f"<{recipient}@example.net>",
        replies={a: AddressReply(*reply) for a, reply in replies.items()},
        status=Status.SENT,  # what the writer thought; the replay recomputes it
        transport="smtp://127.0.0.1:25",
    )


def bounce(recipient: str, address: str, number: int) -> Record:
    fields = {
        "address": address,
        "inbound": f"<dsn{number}@relay.example.net>",
        "status": "5.1.1",
        "diagnostic": "550 5.1.1 user unknown",
    }
    return inbound_record(
        Event.BOUNCE, recipient, fields, archive=f"inbox/{number}.eml", source="maildir"
    )


def test_an_open_attempt_did_not_reach_an_address_refused_before_it() -> None:
    everyone = ["refused@example.net", "later@example.net"]
    history = fold(
        attempt("c", everyone, everyone, 1),
        result(
            "c",
            1,
            {
                "refused@example.net": (Outcome.REFUSED, 550, "5.1.1 no such user"),
                "later@example.net": (Outcome.DEFERRED, 451, "4.7.1 try later"),
            },
        ),
        attempt("c", ["later@example.net"], everyone, 2),  # its answer never came
    )
    assert history.state("c").status() == Status.UNKNOWN
    assert history.reached_under_other_ids({"refused@example.net": "c2"}) == []
    assert history.reached_under_other_ids({"later@example.net": "c2"}) == [
        ("later@example.net", "c2", "c")
    ]


def test_a_bounce_after_a_lost_answer_claims_no_earlier_letters_acceptance() -> None:
    address = "x@example.net"
    history = fold(
        attempt("r", [address], [address], 1),
        result("r", 1, {address: (Outcome.ACCEPTED, 250, "2.0.0 Ok: queued as OLD111")}),
        bounce("r", address, 1),
        resolve_record(recipient="r", settled_as=Status.PENDING, reason="fixed", by="me"),
        attempt("r", [address], [address], 2),
        result("r", 2, {address: (Outcome.UNKNOWN, None, "no answer after the data")}),
        bounce("r", address, 2),
    )
    state = history.state("r")
    assert state.status() == Status.BOUNCED
    assert state.acceptance(address) is None


def test_a_bounce_of_an_accepted_letter_keeps_that_acceptance() -> None:
    address = "x@example.net"
    history = fold(
        attempt("r", [address], [address], 1),
        result("r", 1, {address: (Outcome.ACCEPTED, 250, "2.0.0 Ok: queued as NEW222")}),
        bounce("r", address, 1),
    )
    kept = history.state("r").acceptance(address)
    assert kept is not None and kept.reply == "2.0.0 Ok: queued as NEW222"
