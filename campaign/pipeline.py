"""Sending a campaign: plan from the log (skip what is done), deliver concurrently, record.

preflight (elsewhere: load, render, build) -> lock the log, replay it -> plan -> deliver
with bounded concurrency, a shared rate limit and retries with backoff -> every attempt and
result in the send log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol

from campaign.archive import MAX_LETTER_BYTES, Archive
from campaign.display import listed
from campaign.drafts import letter_problem, message_id_of
from campaign.errors import CampaignError, RunRefused, UsageError
from campaign.models import Draft
from campaign.outcomes import RunEffect, address_reply, connect_effect, run_effect
from campaign.pacing import RECHECK, PaceChange, Pacer, Signal, Slot, rule_for
from campaign.prepare import Prepared
from campaign.safefiles import refuse_symlink, remove_temporaries
from campaign.sendlog import (
    AddressReply,
    LogLock,
    Outcome,
    RecipientState,
    Record,
    Replay,
    SendLog,
    Status,
    attempt_record,
    pace_record,
    planned_record,
    postponed_record,
    replay,
    resolve_record,
    result_record,
    run_end_record,
    run_start_record,
    status_of,
)
from campaign.transports.base import (
    SERVICE_CLOSING,
    ConnectFailure,
    ConnectStep,
    Delivery,
    Reply,
    Stage,
    Transport,
)


@dataclass(frozen=True)
class SendOptions:
    concurrency: int = 4
    rate: float | None = None  # messages per minute, across all connections
    retries: int = 3
    backoff: float = 2.0
    retry_unknown: bool = False
    allow_changes: bool = False
    test: bool = False
    max_wait: float = 1800.0  # seconds with nothing accepted before the rest is deferred


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    draft: Draft
    addresses: tuple[str, ...]
    # A partial resumed: the SHA-256 of the letter its other addresses got, so that the
    # rest get the same bytes (taken from the archive only if they still hash to it).
    reuse: str | None = None


@dataclass(frozen=True)
class Plan:
    messages: list[PlannedMessage]
    skipped: dict[Status, list[str]]
    changed: tuple[str, ...]
    address_count: int


def make_plan(
    prepared: Prepared,
    history: Replay,
    options: SendOptions,
    only: Collection[str] | None = None,
) -> Plan:
    """What this run sends: never-attempted and deferred recipients; sent ones are skipped.

    `prepared` holds every recipient of the file, so that a change to the letter is seen
    even for recipients this run (`only`) leaves out.
    """
    drafts = prepared.drafts
    wanted = [d for d in drafts if not only or d.recipient_id in only]
    if options.test:
        tests = [PlannedMessage(d, d.addresses) for d in wanted]
        return Plan(tests, {}, (), sum(len(d.addresses) for d in wanted))
    messages: list[PlannedMessage] = []
    skipped: dict[Status, list[str]] = {}
    for draft in wanted:
        state = history.recipients.get(draft.recipient_id)
        if state is None or not state.addresses:
            messages.append(PlannedMessage(draft, draft.addresses))
            continue
        addresses = state.to_offer(draft.addresses, retry_unknown=options.retry_unknown)
        if not addresses:
            skipped.setdefault(state.status(draft.addresses), []).append(draft.recipient_id)
            continue
        reuse = None
        if state.sha256 and any(s.outcome == Outcome.ACCEPTED for s in state.addresses):
            reuse = state.sha256
        messages.append(PlannedMessage(draft, addresses, reuse))
    if not options.allow_changes:
        # First: a second letter to someone is worse than a changed one, and --allow-changes,
        # the way past the next refusal, would also send it.
        _refuse_addresses_sent_under_other_ids(messages, history)
    if messages:  # nothing to send, nothing sent different from the rest
        _refuse_changed_letters(drafts, history, options)
    changed = tuple(_changed(drafts, history))
    return Plan(messages, skipped, changed, sum(len(m.addresses) for m in messages))


def _refuse_addresses_sent_under_other_ids(
    messages: Sequence[PlannedMessage], history: Replay
) -> None:
    """An address that got this campaign's letter under another id (a recipient renamed, or
    an address moved to someone else) does not get it again unless that is meant."""
    if not history.recipients:
        return  # a first run: no address got anything yet
    # Compared without case, as the loader compares addresses for duplicates.
    planned = {a.casefold(): m.draft.recipient_id for m in messages for a in m.addresses}
    again = [
        f"{address} (now '{now}', sent as '{before}')"
        for address, now, before in history.reached_under_other_ids(planned)
    ]
    if again:
        raise RunRefused(
            f"{len(again)} address(es) were already sent this campaign's letter under another"
            f" recipient id: {listed(again)}; nothing was sent",
            hint="give the recipient its earlier id back (`campaign log --history ID` shows"
            " what went), take the address out, or pass --allow-changes if a second letter"
            " is meant",
        )


def _changed(drafts: Sequence[Draft], history: Replay) -> Iterator[str]:
    for draft in drafts:
        state = history.recipients.get(draft.recipient_id)
        if state is not None and state.content_hash not in (None, draft.content_hash):
            yield draft.recipient_id


def _refuse_changed_letters(drafts: Sequence[Draft], history: Replay, options: SendOptions) -> None:
    """A letter changed after part of the campaign went out is sent only when meant."""
    began = any(state.delivered_somewhere for state in history.recipients.values())
    if not began or options.allow_changes:
        return
    changed = list(_changed(drafts, history))
    if not changed:
        return
    sent = [r for r in changed if history.recipients[r].delivered_somewhere]
    waiting = [r for r in changed if r not in sent]
    parts = []
    if waiting:
        parts.append(
            f"{len(waiting)} recipient(s) not yet sent would get a different letter from"
            f" the one recorded: {listed(waiting)}"
        )
    if sent:
        parts.append(f"{len(sent)} already sent had the earlier letter: {listed(sent)}")
    raise RunRefused(
        "the letter changed since part of the campaign was sent; " + "; ".join(parts),
        hint="undo the change to the template, the data or an attachment, or pass"
        " --allow-changes if it is meant",
    )


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def update(self, recipient: str, status: str) -> None: ...

    def pace(self, change: str, pace: str) -> None:
        """The pace changed (`change` says how and why; `pace` is the pace now)."""
        ...

    def finish(self) -> None: ...


@dataclass
class RunResult:
    statuses: dict[str, Status] = field(default_factory=dict)
    stopped: str | None = None  # the run stopped: what concerns every letter
    gave_up: str | None = None  # --max-wait passed: the rest was left deferred, and why
    connections: int = 0

    def counts(self) -> Counter[Status]:
        return Counter(self.statuses.values())

    @property
    def complete(self) -> bool:
        return (
            self.stopped is None
            and self.gave_up is None
            and all(s == Status.SENT for s in self.statuses.values())
        )


@dataclass(slots=True)
class _Job:
    message: PlannedMessage
    addresses: tuple[str, ...]
    tries: int = 0
    first_refused: float | None = None
    passed_at_refusal: int | None = None  # letters accepted in the run when last paced back


class SendRun:
    """One run of deliveries through `transports`, recorded in `log`, folded into `history`.

    The pacer spaces the letters over the connections it allows: a server that says
    "too fast" or "too many connections" slows the whole run, not one letter.
    """

    def __init__(
        self,
        prepared: Prepared,
        plan: Plan,
        log: SendLog,
        history: Replay,
        options: SendOptions,
        *,
        archive: Archive | None,
        progress: Progress,
        run_id: str,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.prepared = prepared
        self.plan = plan
        self.log = log
        self.history = history
        self.options = options
        self.archive = archive
        self.progress = progress
        self.run_id = run_id
        self.clock = clock
        self.rng = rng or random.Random()
        self.pacer = Pacer(
            rate=options.rate,
            connections=options.concurrency,
            max_wait=options.max_wait,
            retries=options.retries,
            backoff=options.backoff,
            clock=clock,
        )
        self.result = RunResult()
        self._fresh: Iterator[PlannedMessage] = iter(())
        self._retries: list[tuple[float, int, _Job]] = []  # (when due, order, job)
        self._order = itertools.count()
        self._gate = asyncio.Lock()  # one connection waits for the pace at a time, in turn
        self._outstanding = 0
        self._transports: Sequence[Transport] = ()
        self._first_answer = asyncio.Event()
        self._wake = asyncio.Event()  # set (and replaced) when a waiting connection may go on
        self._connect_failures = 0
        self._passed = 0  # letters accepted so far in this run
        self._finishing: set[asyncio.Task[None]] = set()
        self._unarchived_bytes = 0  # letters accepted and waiting for the archive, in bytes

    def _record(self, record: Record) -> None:
        self.history.apply(self.log.write(record))

    async def run(self, transports: Sequence[Transport]) -> RunResult:
        for message in self.plan.messages:
            self.result.statuses[message.draft.recipient_id] = Status.PENDING
        self._fresh = iter(self.plan.messages)
        self._outstanding = len(self.plan.messages)
        if not self._outstanding:
            return self.result
        self.progress.start(self._outstanding)
        self._transports = transports
        workers = [
            asyncio.create_task(self._worker(i, t, lead=i == 0)) for i, t in enumerate(transports)
        ]
        try:
            await asyncio.gather(*workers)
            await asyncio.gather(*self._finishing)
        finally:
            for worker in workers:
                worker.cancel()
            for transport in transports:
                await transport.close()
                self.result.connections += getattr(transport, "connections", 0)
            self.progress.finish()
        if not self.options.test:
            for message in self.plan.messages:
                recipient = message.draft.recipient_id
                state = self.history.recipients.get(recipient)
                if state is not None:
                    self.result.statuses[recipient] = state.status(message.draft.addresses)
        return self.result

    def _active(self) -> bool:
        return self.result.stopped is None and self.result.gave_up is None and self._outstanding > 0

    async def _worker(self, number: int, transport: Transport, *, lead: bool = False) -> None:
        if not lead:
            # One connection meets the server first: a refusal that concerns every message
            # (greeting, TLS, login, sender) then stops the run after one try, not one per
            # connection (a wrong password tried on every connection at once can lock the
            # account).
            await self._first_answer.wait()
        while self._active():
            if number >= self.pacer.connections:
                await transport.close()  # the pace needs fewer connections now
                await self._nap(RECHECK)
                continue
            why = self.pacer.stalled()
            if why is not None:
                self._give_up(why)
                return
            async with self._gate:
                while self._active() and not (slot := self.pacer.reserve()).booked:
                    await asyncio.sleep(slot.wait)
            if not self._active():
                return
            job = self._take()
            if job is None:
                await self._nap(self._until_due())
                continue
            if await self._open(transport, job):
                await self._attempt(transport, job, slot)
            self._first_answer.set()

    def _take(self) -> _Job | None:
        """The next letter: one not tried yet (taken only when needed), else a retry that is
        due. New letters first: a letter refused again and again cannot hold up the rest,
        and one held back by the pace goes as soon as the pace allows a slot for it."""
        message = next(self._fresh, None)
        if message is not None:
            return _Job(message, message.addresses)
        if self._retries and self._retries[0][0] <= self.clock():
            return heapq.heappop(self._retries)[2]
        return None

    async def _nap(self, seconds: float) -> None:
        """Wait up to `seconds`, or less when a letter is settled or put back, or the run ends."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _wake_all(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    def _until_due(self) -> float:
        if not self._retries:
            return RECHECK
        return min(RECHECK, max(0.0, self._retries[0][0] - self.clock()))

    def _again(self, job: _Job, delay: float) -> None:
        """Back in line, due after `delay`."""
        heapq.heappush(self._retries, (self.clock() + delay, next(self._order), job))
        self._wake_all()

    async def _open(self, transport: Transport, job: _Job) -> bool:
        """Connect if needed; on failure the letter goes back in line, untried."""
        try:
            await transport.open()
        except ConnectFailure as failure:
            self._again(job, 0.0)
            others = sum(1 for t in self._transports if t is not transport and t.is_open)
            # A temporary login refusal while other connections send ("454 4.7.0 Too many
            # login attempts") limits connections; alone, it ends the run (one failed login).
            busy_login = failure.step == ConnectStep.LOGIN and _temporary(failure.code) and others
            if connect_effect(failure) == RunEffect.STOP and not busy_login:
                self._stop(str(failure))
                return False
            if failure.code is not None:  # a busy greeting: the server limits connections
                self._pace(
                    self.pacer.connection_refused(
                        failure.code, failure.reason, open_connections=others
                    )
                )
                return False
            self._connect_failures += 1
            if self._connect_failures > self.options.retries and not others:
                self._stop(f"cannot reach the server any more: {failure}")
                return False
            await asyncio.sleep(self.options.backoff * 2 ** (self._connect_failures - 1))
            return False
        self._connect_failures = 0
        return True

    def _pace(self, change: PaceChange | None) -> None:
        """A change of pace: shown as it happens and kept in the log."""
        if change is None:
            return
        self.progress.pace(change.message, self.pacer.pace.describe())
        before, after = change.before, change.after
        self._record(
            pace_record(
                run=self.run_id,
                per_minute=_rounded(after.per_minute),
                connections=after.connections,
                before_per_minute=_rounded(before.per_minute),
                before_connections=before.connections,
                signal=str(change.signal),
                reply=change.reply,
                message=change.message,
            )
        )

    def _stop(self, reason: str) -> None:
        if self.result.stopped is None:
            self.result.stopped = reason
            self._wake_all()

    def _give_up(self, reason: str) -> None:
        """--max-wait passed with nothing accepted: leave the rest deferred, with the reason."""
        if self.result.gave_up is not None:
            return
        self.result.gave_up = reason
        untried = [m for m in self._fresh]
        for message in untried:
            recipient = message.draft.recipient_id
            self._record(
                postponed_record(
                    run=self.run_id,
                    recipient=recipient,
                    addresses=message.addresses,
                    reason=f"not tried: {reason}",
                )
            )
            self.result.statuses[recipient] = Status.DEFERRED
        for _, _, job in self._retries:
            self.result.statuses[job.message.draft.recipient_id] = Status.DEFERRED
        self._retries.clear()
        self._wake_all()

    def _finish_job(self) -> None:
        self._outstanding -= 1
        self._wake_all()

    async def _attempt(self, transport: Transport, job: _Job, slot: Slot) -> None:
        """Record the attempt, send, record the result, decide what comes next."""
        draft = job.message.draft
        data = self._bytes(job.message)
        digest = hashlib.sha256(data).hexdigest() if job.message.reuse else draft.sha256
        attempt = self.history.state(draft.recipient_id).attempts + 1
        job.tries += 1
        self._record(
            attempt_record(
                run=self.run_id,
                recipient=draft.recipient_id,
                addresses=job.addresses,
                all_addresses=draft.addresses,
                message_id=draft.message_id,
                attempt=attempt,
                content_hash=draft.content_hash,
                sha256=digest,
                size=len(data),
                transport=transport.name,
                test=self.options.test,
            )
        )
        refused: Mapping[str, Reply] | None = None  # set as the data is about to leave

        async def before_data(refused_so_far: Mapping[str, Reply]) -> None:
            nonlocal refused
            await self.log.durable()
            refused = refused_so_far

        try:
            delivery = await transport.send(draft, data, job.addresses, before_data)
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Interrupted (Ctrl-C cancels; SIGTERM can raise right here) while on its way.
            if refused is not None:
                self._record_interrupted(job, attempt, data, digest, transport.name, refused)
            raise
        sender = draft.sender
        replies = {
            address: address_reply(reply, sender) for address, reply in delivery.replies.items()
        }
        stop = next(
            (r for r in delivery.replies.values() if run_effect(r, sender) == RunEffect.STOP),
            None,
        )
        if stop is not None:
            self._stop(
                f"{transport.name} refused the sender {sender} or this client for every"
                f" recipient: {stop}"
            )
        signal = self._tell_pacer(job, slot, delivery)
        result = _Result(job, attempt, replies, digest, transport.name, signal)
        went_out = any(r.outcome in (Outcome.ACCEPTED, Outcome.UNKNOWN) for r in replies.values())
        if went_out and self.archive is not None:
            # The bytes are made durable before the log names them; meanwhile this
            # connection goes on with the next letter, unless the disk lags so far behind
            # that the letters waiting for it would fill the memory.
            self._unarchived_bytes += len(data)
            task = asyncio.create_task(self._archive_then_finish(result, data))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            while self._finishing and self._unarchived_bytes > MAX_UNARCHIVED_BYTES:
                await asyncio.wait(self._finishing, return_when=asyncio.FIRST_COMPLETED)
        else:
            self._finish(result, None)

    def _record_interrupted(
        self,
        job: _Job,
        attempt: int,
        data: bytes,
        digest: str,
        transport: str,
        refused: Mapping[str, Reply],
    ) -> None:
        """A run stopped while a letter's data was on its way: the server may have it.

        Its bytes are kept now, and its result recorded unknown, so that what may have gone
        can be shown (an attempt left without a result reads unknown too, but without them).
        An address the server had already refused keeps that refusal.
        """
        unknown = AddressReply(
            Outcome.UNKNOWN, None, "the run was interrupted while the letter was on its way"
        )
        sender = job.message.draft.sender
        replies = {
            address: address_reply(refused[address], sender) if address in refused else unknown
            for address in job.addresses
        }
        result = _Result(job, attempt, replies, digest, transport, Signal.NONE)
        self._record_result(result, self._keep_now(job.message.draft, digest, data))
        self._settle(job.message.draft, replies)  # so the run's last line counts it

    def _tell_pacer(self, job: _Job, slot: Slot, delivery: Delivery) -> Signal:
        """What the answer says about the pace: accepted, or refused for going too fast.

        A refusal of one address while another of the same letter was accepted concerns that
        address alone (greylisting, a full mailbox), as does a bare policy code at RCPT, or
        an RCPT refused again while other letters passed: only the rest is the run's pace.
        """
        replies = delivery.replies.values()
        accepted = any(r.accepted for r in replies)
        refused = next((r for r in replies if _temporary(r.code)), None)
        if refused is not None and not accepted and self._about_the_pace(job, refused):
            # At MAIL no recipient explains it; unless other letters passed since this one
            # was refused, it is the run's (a sender domain not found, a lookup failure).
            passed_since = (
                job.passed_at_refusal is not None and self._passed > job.passed_at_refusal
            )
            server_wide = refused.stage == Stage.MAIL and not passed_since
            signal, change = self.pacer.refused(
                slot, refused.code, refused.text, server_wide=server_wide
            )
            self._pace(change)
            job.passed_at_refusal = self._passed
            return signal
        if accepted:
            self._passed += 1
            self._pace(self.pacer.accepted(slot))
        return Signal.TEMPORARY if refused is not None or not accepted else Signal.NONE

    def _about_the_pace(self, job: _Job, reply: Reply) -> bool:
        if reply.stage != Stage.RCPT or reply.code == SERVICE_CLOSING:
            return True  # MAIL, the data, a closing channel: the sender's or client's limit
        if job.passed_at_refusal is not None and self._passed > job.passed_at_refusal:
            return False  # other letters passed since this one was last refused
        rule = rule_for(reply.code or 0, reply.text)
        return rule is not None and rule.text is not None and rule.signal != Signal.TEMPORARY

    async def _archive_then_finish(self, result: _Result, data: bytes) -> None:
        assert self.archive is not None
        name = None
        draft = result.job.message.draft
        try:
            name = await self.archive.keep(draft.filename, result.sha256, data)
        except (asyncio.CancelledError, KeyboardInterrupt):
            # The run is being interrupted: this letter went out, so it is kept and recorded now.
            self._finish(result, self._keep_now(draft, result.sha256, data))
            raise
        except (OSError, CampaignError) as err:
            self._stop(f"the sent archive could not keep a letter: {err}")
        finally:
            self._unarchived_bytes -= len(data)
        self._finish(result, name)

    def _finish(self, result: _Result, archive: str | None) -> None:
        self._record_result(result, archive)
        self._decide(result.job, result.replies, result.signal)

    def _record_result(self, result: _Result, archive: str | None) -> None:
        draft = result.job.message.draft
        self._record(
            result_record(
                run=self.run_id,
                recipient=draft.recipient_id,
                attempt=result.attempt,
                message_id=draft.message_id,
                replies=result.replies,
                status=self._status_after(draft, result.replies),
                transport=result.transport,
                archive=archive,
                sha256=result.sha256 if archive else None,
                test=self.options.test,
            )
        )

    def _keep_now(self, draft: Draft, sha256: str, data: bytes) -> str | None:
        """The letter kept at once, as a run is interrupted; None when it cannot be."""
        if self.archive is None or self.options.test:
            return None
        with contextlib.suppress(OSError, CampaignError):
            return self.archive.keep_now(draft.filename, sha256, data)
        return None

    def _decide(self, job: _Job, replies: dict[str, AddressReply], signal: Signal) -> None:
        """Try again what may pass later (when the pace or the backoff allows), or settle."""
        recipient = job.message.draft.recipient_id
        retry = tuple(a for a, r in replies.items() if r.outcome == Outcome.DEFERRED)
        if retry and self.result.stopped is None and self.result.gave_up is None:
            if job.first_refused is None:
                job.first_refused = self.clock()
            paced = signal in (Signal.RATE, Signal.CONNECTIONS)
            delay = self.pacer.retry_after(signal, job.tries, job.first_refused)
            if paced and job.tries > self.options.retries + PACED_TRIES:
                delay = None  # refused this often while others pass: not the pace
            if delay is not None:
                self.progress.update(recipient, "retrying")
                job.addresses = retry
                self._again(job, delay * self.rng.uniform(0.75, 1.25))
                return
        self._settle(job.message.draft, replies)
        self._finish_job()

    def _settle(self, draft: Draft, replies: dict[str, AddressReply]) -> None:
        status = self._status(draft, replies)
        self.result.statuses[draft.recipient_id] = status
        self.progress.update(draft.recipient_id, status)

    def _status_after(self, draft: Draft, replies: dict[str, AddressReply]) -> Status:
        """The status this result gives the recipient, for the result record itself."""
        if self.options.test:
            return self._status(draft, replies)
        known = self.history.state(draft.recipient_id).by_address()
        outcomes = {
            a: known[folded].outcome if (folded := a.casefold()) in known else Outcome.PENDING
            for a in draft.addresses
        }
        outcomes.update((a, r.outcome) for a, r in replies.items() if a in outcomes)
        return status_of(list(outcomes.values()))

    def _status(self, draft: Draft, replies: dict[str, AddressReply]) -> Status:
        """The recipient's status as the log now says; test sends are tracked here alone."""
        if not self.options.test:
            return self.history.state(draft.recipient_id).status(draft.addresses)
        return status_of([r.outcome for r in replies.values()])

    def _bytes(self, message: PlannedMessage) -> bytes:
        """The letter's bytes; for a partial resumed, the very bytes the others got.

        Those come only from this campaign's own archive and only while they still hash
        to what the log recorded and read as this recipient's letter; otherwise the
        letter is built anew from the file and the template.
        """
        fresh = self.prepared.data(message.draft)
        if message.reuse is None or self.archive is None:
            return fresh
        kept = self.archive.find(message.draft.filename, message.reuse)
        if kept is None or letter_problem(kept, fresh) is not None:
            return fresh
        return kept


# A letter the pace holds back is tried again as the pace allows, at most this many times
# more than --retries: a steady limit refuses each letter rarely once the run has slowed.
PACED_TRIES = 10
# Accepted letters whose bytes wait for the archive, at most (a slow disk, or one without
# syncfs, where each file is fsynced): beyond it a connection waits before its next letter.
MAX_UNARCHIVED_BYTES = 32 * 1024 * 1024


def _rounded(per_minute: float | None) -> float | None:
    return None if per_minute is None else round(per_minute, 2)


@dataclass(frozen=True, slots=True)
class _Result:
    job: _Job
    attempt: int
    replies: dict[str, AddressReply]
    sha256: str
    transport: str
    signal: Signal


def read_history(path: Path, campaign_id: str) -> Replay:
    """The log's state for this campaign; a log shared with another campaign is refused."""
    history = replay(path, campaign_id)
    if history.other_campaigns:
        others = ", ".join(sorted(history.other_campaigns))
        raise RunRefused(
            f"the log {path} also holds campaign(s) {others}",
            path=path,
            hint="use --log to give each campaign its own log",
        )
    return history


def _refuse_a_lost_log(log_path: Path, campaign_id: str) -> None:
    """This campaign's letters in the archive and no attempt in the log: the log was moved,
    renamed or lost, and a send now would send them all again."""
    sent = log_path.parent / "sent"
    try:
        names = sorted(entry.name for entry in os.scandir(sent) if entry.name.endswith(".eml"))
    except OSError:
        return  # no archive: nothing was sent from here
    ours = f"<{campaign_id}."
    for name in names:
        if (message_id_of(sent / name, MAX_LETTER_BYTES) or "").startswith(ours):
            raise RunRefused(
                f"{sent} holds letters this campaign already sent ({name} and maybe more),"
                f" but the send log {log_path} records none: a send now would send them"
                " again; nothing was sent",
                path=log_path,
                hint="put the send log back, or point --log at it; to start over on purpose,"
                " move this campaign's letters out of the sent folder",
            )


class SendSession:
    """One `campaign send`: the log locked (unless only looked at), replayed, planned, run."""

    def __init__(
        self,
        log_path: Path,
        prepared: Prepared,
        options: SendOptions,
        *,
        clock: Callable[[], datetime],
        lock: bool = True,
    ) -> None:
        self.log_path = log_path
        self.prepared = prepared
        self.options = options
        self.clock = clock
        self._lock = LogLock(log_path) if lock else None
        self.history = Replay()

    def __enter__(self) -> SendSession:
        campaign = self.prepared.campaign
        if self._lock is not None:
            self._lock.acquire(f"campaign send of {campaign.id}")
        try:
            if self._lock is not None:
                # A crashed run's half-written files: only this run can be writing now.
                folder = self.log_path.parent
                refuse_symlink(folder / "sent")  # before the log says a run started
                remove_temporaries(folder, folder / "sent", folder / "inbox")
            self.history = read_history(self.log_path, campaign.id)
            if not self.options.test and not any(
                state.attempts for state in self.history.recipients.values()
            ):
                _refuse_a_lost_log(self.log_path, campaign.id)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._lock is not None:
            self._lock.release()

    def plan(self, only: Collection[str] | None = None) -> Plan:
        return make_plan(self.prepared, self.history, self.options, only)

    def run(self, plan: Plan, transports: Sequence[Transport], progress: Progress) -> RunResult:
        """One run, recorded from start to end in the log, the letters through `transports`."""
        if self._lock is None:
            raise UsageError("a run needs the log locked")
        prepared, options, history = self.prepared, self.options, self.history
        log = SendLog(self.log_path, prepared.campaign.id, clock=self.clock)
        run_id = uuid.uuid4().hex[:12]
        try:
            log.write(
                run_start_record(
                    run=run_id,
                    pid=os.getpid(),
                    transport=transports[0].name if transports else "",
                    planned=len(plan.messages),
                    test=options.test,
                )
            )
            if not options.test:
                for draft in prepared.drafts:
                    state = history.recipients.get(draft.recipient_id)
                    if state is None or state.content_hash != draft.content_hash:
                        log.write(
                            planned_record(
                                run=run_id,
                                recipient=draft.recipient_id,
                                addresses=draft.addresses,
                                content_hash=draft.content_hash,
                            )
                        )
            archive = None
            if not options.test:
                archive = Archive(self.log_path.parent / "sent", self.log_path.parent)
                archive.open()
            send_run = SendRun(
                prepared,
                plan,
                log,
                history,
                options,
                archive=archive,
                progress=progress,
                run_id=run_id,
            )
            try:
                result = asyncio.run(send_run.run(transports))
            finally:
                if archive is not None:
                    archive.close()
            log.write(run_end_record(run=run_id, counts=result.counts(), stopped=result.stopped))
        finally:
            log.close()
        return result


# What `campaign resolve` may settle: as sent, only what nobody knows; as pending (send it
# again), anything not sent and not pending already.
SETTLEABLE = {
    Status.SENT: frozenset({Status.UNKNOWN}),
    Status.PENDING: frozenset(
        {Status.UNKNOWN, Status.FAILED, Status.PARTIAL, Status.DEFERRED, Status.BOUNCED}
    ),
}


def resolve(
    log_path: Path,
    campaign_id: str,
    recipients: Mapping[str, Sequence[str]],
    *,
    settle_as: Status,
    reason: str,
    by: str,
    clock: Callable[[], datetime],
    statuses: Collection[Status] = (),
) -> list[str]:
    """Settle recipients' outcomes, as new events (the log's history is never rewritten).

    `recipients` maps the ids to settle to their current addresses; with `statuses`, every
    recipient of the file in one of them is settled instead. Returns the ids settled.
    """
    lock = LogLock(log_path)
    lock.acquire(f"campaign resolve as {settle_as}")
    try:
        history = read_history(log_path, campaign_id)
        allowed = SETTLEABLE[settle_as]
        chosen: list[tuple[str, RecipientState]] = []
        for recipient, addresses in recipients.items():
            state = history.recipients.get(recipient)
            status = state.status(addresses) if state is not None else Status.PENDING
            if statuses and status not in statuses:
                continue
            if state is None or status not in allowed:
                if statuses:
                    continue
                raise UsageError(
                    f"recipient '{recipient}' is {status}; only a recipient who is"
                    f" {' or '.join(sorted(allowed))} can be settled as {settle_as}"
                )
            chosen.append((recipient, state))
        log = SendLog(log_path, campaign_id, clock=clock)
        try:
            for recipient, state in chosen:
                sha256 = state.attempt_sha256 if settle_as == Status.SENT else None
                log.write(
                    resolve_record(
                        recipient=recipient,
                        settled_as=settle_as,
                        reason=reason,
                        by=by,
                        sha256=sha256,
                        archive=state.archive if sha256 and sha256 == state.sha256 else None,
                    )
                )
        finally:
            log.close()
        return [recipient for recipient, _ in chosen]
    finally:
        lock.release()


def _temporary(code: int | None) -> bool:
    return code is not None and 400 <= code < 500
