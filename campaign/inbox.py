"""`campaign inbox`: what came back to the campaign's mailbox, recorded in the send log.

Each message is classified (bounce, delay, automatic reply, reply), tied to the letters this
campaign sent (their Message-IDs and accepted addresses in the log), kept under
`outbox/inbox/` (bytes durable first) and recorded as one event per letter and address.
Nothing is recorded twice; the mailbox itself is only read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from campaign.inbound import Kind, MessageTooLarge, SentLetter, SentLetters, classify, match
from campaign.mailsource import RawMessage
from campaign.pipeline import read_history
from campaign.safefiles import ensure_folder, fsync_folder, write_file
from campaign.sendlog import Event, LogLock, Outcome, Replay, SendLog, inbound_key, inbound_record

EVENT_OF = {
    Kind.BOUNCE: Event.BOUNCE,
    Kind.DELAYED: Event.DELAYED,
    Kind.AUTO_REPLY: Event.AUTO_REPLY,
    Kind.REPLY: Event.REPLY,
}


@dataclass
class InboxReport:
    """What one reading of the mailbox found."""

    read: int = 0
    matched: Counter[str] = field(default_factory=Counter)  # events recorded, by kind
    not_matched: int = 0
    already: int = 0  # recorded by an earlier `campaign inbox`
    skipped: Counter[str] = field(default_factory=Counter)  # too large, vanished...


def sent_letters(history: Replay) -> SentLetters:
    """The campaign's letters as the log has them: Message-ID and the addresses that took it."""
    letters = []
    for recipient, state in history.recipients.items():
        if state.message_id is None:
            continue
        taken = tuple(
            known.address
            for known in state.addresses
            if known.outcome in (Outcome.ACCEPTED, Outcome.BOUNCED, Outcome.UNKNOWN)
        )
        letters.append(SentLetter(recipient, state.message_id, taken))
    return SentLetters(letters)


def read_inbox(
    log_path: Path,
    campaign_id: str,
    messages: Iterable[RawMessage],
    *,
    clock: Callable[[], datetime],
) -> InboxReport:
    """Record what `messages` say about this campaign's letters; return what was found."""
    lock = LogLock(log_path)
    lock.acquire(f"campaign inbox of {campaign_id}")
    try:
        history = read_history(log_path, campaign_id)
        letters = sent_letters(history)
        kept = log_path.parent / "inbox"
        report = InboxReport()
        log = SendLog(log_path, campaign_id, clock=clock)
        try:
            for raw in messages:
                _one(raw, letters, history, log, kept, report)
        finally:
            log.close()
        return report
    finally:
        lock.release()


def _one(
    raw: RawMessage,
    letters: SentLetters,
    history: Replay,
    log: SendLog,
    kept: Path,
    report: InboxReport,
) -> None:
    report.read += 1
    if raw.skipped is not None or raw.data is None:
        report.skipped[str(raw.skipped or "unreadable")] += 1
        return
    try:
        finding = classify(raw.data)
    except MessageTooLarge:
        report.skipped["too-large"] += 1
        return
    found = [m for m in match(finding, letters) if m.kind in EVENT_OF]
    if not found:
        report.not_matched += 1
        return
    records = [
        inbound_record(
            EVENT_OF[m.kind],
            m.recipient,
            m.record(),
            archive=f"inbox/{finding.sha256}.eml",
            source=f"{raw.source} {raw.key}",
        )
        for m in found
    ]
    new = [r for r in records if inbound_key(r) not in history.inbound]
    if not new:
        report.already += 1
        return
    # The message is part of the campaign's record: its bytes are durable before the log
    # names them.
    ensure_folder(kept)
    path = kept / f"{finding.sha256}.eml"
    if not path.is_file():
        write_file(path, raw.data, durable=True)
        fsync_folder(kept)
    for record in new:
        history.apply(log.write(record))
        report.matched[str(record["event"])] += 1
