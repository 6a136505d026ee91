"""Sending a campaign: plan from the log (skip what is done), deliver concurrently, record.

preflight (elsewhere: load, render, build) -> plan -> deliver with bounded concurrency,
a shared rate limit and retries with backoff -> every attempt and result in the send log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, overload

from campaign.errors import RunRefused, UsageError
from campaign.models import Draft
from campaign.prepare import Prepared
from campaign.sendlog import (
    ACCEPTED,
    IN_FLIGHT,
    NOT_YET,
    PENDING,
    SENT,
    UNKNOWN,
    LogLock,
    Replay,
    SendLog,
    address_outcome,
    replay,
    status_of,
)
from campaign.transports.base import Reply, RunStopped, TemporaryFailure, Transport, UnknownOutcome
from campaign.transports.files import write_atomically


@dataclass(frozen=True)
class SendOptions:
    concurrency: int = 4
    rate: float | None = None  # messages per minute, across all connections
    retries: int = 3
    backoff: float = 2.0
    retry_unknown: bool = False
    allow_changes: bool = False
    test: bool = False


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    draft: Draft
    addresses: tuple[str, ...]
    reuse: Path | None = None  # an earlier send's exact bytes, for a partial resumed


class PlannedMessages(Sequence[PlannedMessage]):
    """The messages of a plan, built from the drafts when asked for.

    A plan names positions in the drafts, plus the few messages that go to fewer
    addresses than the draft's (a partial resumed): a run of many recipients then
    holds no object per message until the message is being sent.
    """

    def __init__(
        self,
        drafts: Sequence[Draft],
        positions: array[int],
        partial: dict[int, tuple[tuple[str, ...], Path | None]],
    ) -> None:
        self._drafts = drafts
        self._positions = positions
        self._partial = partial

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> PlannedMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[PlannedMessage]: ...

    def __getitem__(self, index: int | slice) -> PlannedMessage | list[PlannedMessage]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = self._positions[index]
        draft = self._drafts[position]
        partial = self._partial.get(position)
        if partial is None:
            return PlannedMessage(draft, draft.addresses)
        return PlannedMessage(draft, *partial)


@dataclass(frozen=True)
class Plan:
    messages: Sequence[PlannedMessage]
    skipped: dict[str, list[str]]
    changed: tuple[str, ...]
    address_count: int


def _listed(ids: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


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
    positions: array[int] = array("Q")
    partial: dict[int, tuple[tuple[str, ...], Path | None]] = {}
    address_count = 0
    if options.test:
        for position, draft in enumerate(drafts):
            if not only or draft.recipient_id in only:
                positions.append(position)
                address_count += len(draft.addresses)
        return Plan(PlannedMessages(drafts, positions, partial), {}, (), address_count)
    began = any(state.delivered_somewhere for state in history.recipients.values())
    changed = tuple(
        draft.recipient_id
        for draft in (drafts if history.recipients else ())
        if (state := history.recipients.get(draft.recipient_id)) is not None
        and state.content_hash is not None
        and state.content_hash != draft.content_hash
    )
    if began and changed and not options.allow_changes:
        sent = [r for r in changed if history.recipients[r].delivered_somewhere]
        waiting = [r for r in changed if r not in sent]
        parts = []
        if waiting:
            parts.append(
                f"{len(waiting)} recipient(s) not yet sent would get a different letter from"
                f" the one recorded: {_listed(waiting)}"
            )
        if sent:
            parts.append(f"{len(sent)} already sent had the earlier letter: {_listed(sent)}")
        raise RunRefused(
            "the letter changed since part of the campaign was sent; " + "; ".join(parts),
            hint="undo the change to the template or data, or pass --allow-changes if it is meant",
        )
    skipped: dict[str, list[str]] = {}
    for position, draft in enumerate(drafts):
        if only and draft.recipient_id not in only:
            continue
        state = history.recipients.get(draft.recipient_id)
        if state is None or not state.addresses:
            positions.append(position)
            address_count += len(draft.addresses)
            continue
        wanted = set(state.to_send(retry_unknown=options.retry_unknown))
        addresses = tuple(a for a in draft.addresses if a in wanted or a not in state.addresses)
        if not addresses:
            skipped.setdefault(state.status(), []).append(draft.recipient_id)
            continue
        reuse = None
        if state.archive and any(s.outcome == ACCEPTED for s in state.addresses.values()):
            reuse = Path(state.archive)
        positions.append(position)
        address_count += len(addresses)
        if addresses != draft.addresses or reuse is not None:
            partial[position] = (addresses, reuse)
    return Plan(PlannedMessages(drafts, positions, partial), skipped, changed, address_count)


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def update(self, recipient: str, status: str) -> None: ...

    def finish(self) -> None: ...


class RateLimiter:
    """Spaces message starts evenly: at most `per_minute` across every connection."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic):
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._clock = clock
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class RunResult:
    statuses: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None
    connections: int = 0

    def counts(self) -> Counter[str]:
        return Counter(self.statuses.values())

    @property
    def complete(self) -> bool:
        return self.stopped is None and all(s == SENT for s in self.statuses.values())


@dataclass(slots=True)
class _Job:
    message: PlannedMessage
    addresses: tuple[str, ...]
    tries: int = 0


class Delivery:
    """One run of deliveries through `transports`, recorded in `log`, folded into `history`."""

    def __init__(
        self,
        prepared: Prepared,
        plan: Plan,
        log: SendLog,
        history: Replay,
        options: SendOptions,
        *,
        archive_dir: Path | None,
        progress: Progress,
        run_id: str,
        rng: random.Random | None = None,
    ) -> None:
        self.prepared = prepared
        self.plan = plan
        self.log = log
        self.history = history
        self.options = options
        self.archive_dir = archive_dir
        self.progress = progress
        self.run_id = run_id
        self.rng = rng or random.Random()
        self.rate = RateLimiter(options.rate)
        self.result = RunResult()
        self._fresh: Iterator[PlannedMessage] = iter(())
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()  # retries, and the end
        self._outstanding = 0
        self._released = False
        self._workers = 0
        self._first_answer = asyncio.Event()
        self._archive_name = ""  # the archive folder as the log names it
        if archive_dir is not None:
            try:
                self._archive_name = str(archive_dir.relative_to(log.path.parent))
            except ValueError:
                self._archive_name = str(archive_dir)

    def _record(self, event: str, **fields: object) -> None:
        if self.options.test:
            fields["test"] = True
        self.history.apply(self.log.append(event, run=self.run_id, **fields))

    async def run(self, transports: Sequence[Transport]) -> RunResult:
        for message in self.plan.messages:
            self.result.statuses[message.draft.recipient_id] = PENDING
        self._fresh = iter(self.plan.messages)
        self._outstanding = len(self.plan.messages)
        if not self._outstanding:
            return self.result
        self.progress.start(self._outstanding)
        self._workers = len(transports)
        if self.archive_dir is not None:
            self.archive_dir.mkdir(parents=True, exist_ok=True)
        workers = [
            asyncio.create_task(self._worker(t, lead=i == 0)) for i, t in enumerate(transports)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            for transport in transports:
                await transport.close()
                self.result.connections += getattr(transport, "connections", 0)
            self.progress.finish()
        if not self.options.test:
            for recipient in self.result.statuses:
                state = self.history.recipients.get(recipient)
                if state is not None:
                    self.result.statuses[recipient] = state.status()
        return self.result

    async def _worker(self, transport: Transport, *, lead: bool = False) -> None:
        if not lead:
            # One connection meets the server first: a refusal that concerns every message
            # (greeting, TLS, login, sender) then stops the run after one try, not one per
            # connection (a wrong password tried on every connection at once can lock the
            # account).
            await self._first_answer.wait()
        while self.result.stopped is None and self._outstanding > 0:
            job = self._next_fresh()  # messages not tried yet go before retries
            if job is None:
                job = await self._queue.get()
            if job is None or self.result.stopped is not None:
                return
            await self.rate.wait()
            await self._attempt(transport, job)

    def _next_fresh(self) -> _Job | None:
        """The next message not tried yet: taken when needed, so few are held at once."""
        message = next(self._fresh, None)
        return None if message is None else _Job(message, message.addresses)

    def _release_workers(self) -> None:
        """Wake every idle worker with an end-of-work marker (once)."""
        if not self._released:
            self._released = True
            for _ in range(self._workers):
                self._queue.put_nowait(None)

    def _finish_job(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._release_workers()

    async def _attempt(self, transport: Transport, job: _Job) -> None:
        draft = job.message.draft
        state = self.history.state(draft.recipient_id)
        data = self._bytes(job.message)
        # Reused bytes (a partial resumed) are hashed again: the log names what went out.
        digest = draft.sha256 if job.message.reuse is None else hashlib.sha256(data).hexdigest()
        attempt = state.attempts + 1
        job.tries += 1
        self._record(
            "attempt",
            recipient=draft.recipient_id,
            addresses=list(job.addresses),
            all_addresses=list(draft.addresses),
            message_id=draft.message_id,
            attempt=attempt,
            content_hash=draft.content_hash,
            sha256=digest,
            size=len(data),
            transport=transport.name,
        )
        replies: dict[str, tuple[str, Reply]] = {}
        try:
            delivery = await transport.send(draft, data, job.addresses, self.log.durable)
            for address, reply in delivery.replies.items():
                replies[address] = (address_outcome(reply.code, reply.accepted), reply)
        except TemporaryFailure as err:
            for address in job.addresses:
                reply = err.replies.get(address, err.reply)
                replies[address] = (address_outcome(reply.code, False), reply)
        except UnknownOutcome as err:
            for address in job.addresses:
                if address in err.replies:
                    reply = err.replies[address]
                    replies[address] = (address_outcome(reply.code, False), reply)
                else:
                    replies[address] = (IN_FLIGHT, Reply(None, err.reason))
        except RunStopped as err:
            self.result.stopped = err.reason
            reply = err.reply or Reply(None, err.reason)
            for address in job.addresses:
                replies[address] = (NOT_YET, Reply(reply.code, f"run stopped: {err.reason}"))
            self._release_workers()
        self._first_answer.set()
        archive = None
        if any(outcome == ACCEPTED for outcome, _ in replies.values()):
            archive = await self._archive(job.message, data)
        self._record(
            "result",
            recipient=draft.recipient_id,
            attempt=attempt,
            message_id=draft.message_id,
            replies={
                address: {"outcome": outcome, "code": reply.code, "reply": reply.text}
                for address, (outcome, reply) in replies.items()
            },
            status=self._status_after(draft.recipient_id, replies),
            transport=transport.name,
            **({"archive": archive, "sha256": digest} if archive else {}),
        )
        retry = tuple(a for a, (outcome, _) in replies.items() if outcome == "deferred")
        if retry and job.tries <= self.options.retries and self.result.stopped is None:
            self.progress.update(draft.recipient_id, "retrying")
            delay = self.options.backoff * 2 ** (job.tries - 1) * self.rng.uniform(0.5, 1.5)
            job.addresses = retry
            asyncio.get_running_loop().call_later(delay, self._queue.put_nowait, job)
            return
        status = self._status(draft.recipient_id, replies)
        self.result.statuses[draft.recipient_id] = status
        if status == SENT and not self.options.test:
            # Done with: its state is in the log; a long run keeps only what needs attention.
            self.history.recipients.pop(draft.recipient_id, None)
        self.progress.update(draft.recipient_id, status)
        self._finish_job()

    def _status_after(self, recipient: str, replies: dict[str, tuple[str, Reply]]) -> str:
        """The status this result gives the recipient, for the result record itself."""
        if self.options.test:
            return self._status(recipient, replies)
        outcomes = {a: s.outcome for a, s in self.history.state(recipient).addresses.items()}
        outcomes.update((address, outcome) for address, (outcome, _) in replies.items())
        return status_of(list(outcomes.values()))

    def _status(self, recipient: str, replies: dict[str, tuple[str, Reply]]) -> str:
        """The recipient's status as the log now says; test sends are tracked here alone."""
        if not self.options.test:
            return self.history.state(recipient).status()
        outcomes = {outcome for outcome, _ in replies.values()}
        return SENT if outcomes == {ACCEPTED} else next(iter(outcomes - {ACCEPTED}), PENDING)

    def _bytes(self, message: PlannedMessage) -> bytes:
        if message.reuse is not None:
            path = (
                message.reuse
                if message.reuse.is_absolute()
                else self.log.path.parent / message.reuse
            )
            if path.is_file():
                return path.read_bytes()
        return self.prepared.data(message.draft)

    async def _archive(self, message: PlannedMessage, data: bytes) -> str | None:
        """Keep the exact bytes a server accepted; the log records where and their SHA-256."""
        if self.archive_dir is None:
            return None
        name = message.draft.filename
        path = self.archive_dir / name
        if message.reuse is None or not path.exists():
            write_atomically(path, data)
        return os.path.join(self._archive_name, name)


def execute(
    prepared: Prepared,
    plan: Plan,
    history: Replay,
    transports: Sequence[Transport],
    options: SendOptions,
    *,
    log_path: Path,
    progress: Progress,
    clock: Callable[[], datetime],
) -> RunResult:
    """One run: recorded from start to end in the log, the letters through `transports`."""
    campaign = prepared.source.campaign
    log = SendLog(log_path, campaign.id, clock=clock)
    run_id = uuid.uuid4().hex[:12]
    try:
        log.append(
            "run-start",
            run=run_id,
            pid=os.getpid(),
            transport=transports[0].name if transports else "",
            planned=len(plan.messages),
            test=options.test,
        )
        if not options.test:
            # Every recipient's letter as of this run, for the next run's replay: a later
            # change is then noticed for recipients not sent yet too.
            for draft in prepared.drafts:
                state = history.recipients.get(draft.recipient_id)
                if state is None or state.content_hash != draft.content_hash:
                    log.append(
                        "planned",
                        run=run_id,
                        recipient=draft.recipient_id,
                        addresses=list(draft.addresses),
                        content_hash=draft.content_hash,
                    )
        delivery = Delivery(
            prepared,
            plan,
            log,
            history,
            options,
            archive_dir=None if options.test else log_path.parent / "sent",
            progress=progress,
            run_id=run_id,
        )
        result = asyncio.run(delivery.run(transports))
        log.append("run-end", run=run_id, counts=dict(result.counts()), stopped=result.stopped)
    finally:
        log.close()
    return result


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


def resolve(
    log_path: Path,
    campaign_id: str,
    recipient: str,
    *,
    settle_as: str,
    reason: str,
    clock: Callable[[], datetime],
) -> None:
    """Settle an unknown outcome, as a new event: the log's history is never rewritten."""
    lock = LogLock(log_path)
    lock.acquire(f"campaign resolve {recipient}")
    try:
        state = read_history(log_path, campaign_id).recipients.get(recipient)
        status = state.status() if state is not None else PENDING
        if status != UNKNOWN:
            raise UsageError(
                f"recipient '{recipient}' is {status}, not unknown; there is nothing to settle"
            )
        log = SendLog(log_path, campaign_id, clock=clock)
        try:
            log.append("resolve", recipient=recipient, reason=reason, **{"as": settle_as})
        finally:
            log.close()
    finally:
        lock.release()
