"""A discrete-event simulation of a send run against a rate-limiting provider (fake clock).

Pure Python: no sockets, no asyncio, no sleeping. A run of N messages over up to K
connections is driven by a `campaign.pacing.Pacer`, exactly as the send loop is meant
to drive it (see the pseudo-code in `campaign/pacing.py`): ask for a slot, wait for it,
send MAIL, and feed the pacer every refusal, every refused connection and every
accepted message. The provider models answer like real relays:

* `TokenBucket` -- a message rate with a burst (most hosted relays; bench/sink.py's
  provider mode), a maximum of connections per client, refusals at MAIL;
* `FixedWindow` -- Postfix's anvil: at most `limit` MAIL commands per client in a window
  of `window` seconds that starts at the client's first event after the previous window
  ran out; a refused MAIL counts as an error: beyond 10 errors without a delivery every
  reply is 1 s late, at 20 the session is closed with 421 (smtpd_soft_error_limit,
  smtpd_hard_error_limit, smtpd_error_sleep_time);
* `SlidingWindow` -- at most `limit` accepted messages in any `window` seconds.

    result = simulate(TokenBucket(600, 20, 2), n=2000)
    result.ratio, result.refused_share, result.failed
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from campaign.pacing import Pacer, Signal, Slot

Reply = tuple[int, str]
Process = Generator[float | None, None, None]


class Sim:
    """A clock and a queue of generator processes, each yielding how long it waits.

    A process that yields None is parked until `wake(process)`.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Process]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    def spawn(self, process: Process) -> None:
        self._advance(process)

    def wake(self, process: Process) -> None:
        heapq.heappush(self._queue, (self.now, next(self._seq), process))

    def _advance(self, process: Process) -> None:
        try:
            delay = next(process)
        except StopIteration:
            return
        if delay is not None:
            heapq.heappush(self._queue, (self.now + max(0.0, delay), next(self._seq), process))

    def run(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            self.now, _, process = heapq.heappop(self._queue)
            self._advance(process)


# --------------------------------------------------------------------------- providers


class Provider:
    """What a relay decides at the greeting and at MAIL; None means 'go ahead'."""

    name = "provider"
    max_connections = 0

    def __init__(self) -> None:
        self.open = 0
        self.refused_connections = 0
        self.refused_mail = 0
        self.mail_commands = 0

    def connect(self, now: float) -> Reply | None:
        if self.max_connections and self.open >= self.max_connections:
            self.refused_connections += 1
            return self.greeting_refusal()
        self.open += 1
        return None

    def disconnect(self, now: float) -> None:
        self.open -= 1

    def greeting_refusal(self) -> Reply:
        return (421, "4.7.0 Too many concurrent connections")

    def mail(self, now: float, session: Session) -> Reply | None:
        self.mail_commands += 1
        refusal = self.decide(now)
        if refusal is not None:
            self.refused_mail += 1
        return refusal

    def decide(self, now: float) -> Reply | None:
        return None

    def delivered(self, now: float, session: Session) -> None:
        """A message went through."""

    def reply_delay(self, session: Session) -> float:
        return 0.0

    def ideal(self, n: int) -> float:
        raise NotImplementedError


class TokenBucket(Provider):
    """`per_minute` messages a minute with a burst of `burst`, `max_connections` per client."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        max_connections: int,
        mail_reply: Reply = (451, "4.7.1 rate limited, try again later"),
        greeting_reply: Reply = (421, "4.7.0 Too many concurrent connections"),
    ) -> None:
        super().__init__()
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_connections = max_connections
        self.tokens = float(burst)
        self.updated = 0.0
        self.mail_reply = mail_reply
        self.greeting_reply = greeting_reply
        self.name = f"token bucket {per_minute:g}/min, burst {burst}, {max_connections} conn"

    def greeting_refusal(self) -> Reply:
        return self.greeting_reply

    def decide(self, now: float) -> Reply | None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return self.mail_reply

    def ideal(self, n: int) -> float:
        return n / self.rate


class FixedWindow(Provider):
    """Postfix anvil: `limit` MAIL commands per `window` s, counted from the first event.

    A refused MAIL counts too, but does not move the window; anvil counts whole seconds.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        max_connections: int,
        mail_reply: Reply = (450, "4.7.1 Error: too much mail from 127.0.0.1"),
        greeting_reply: Reply = (
            421,
            "4.7.0 pacing.test.invalid Error: too many connections from 127.0.0.1",
        ),
        soft_errors: int = 10,
        hard_errors: int = 20,
    ) -> None:
        super().__init__()
        self.limit = limit
        self.window = window
        self.max_connections = max_connections
        self.start: int | None = None
        self.count = 0
        self.mail_reply = mail_reply
        self.greeting_reply = greeting_reply
        self.soft_errors = soft_errors
        self.hard_errors = hard_errors
        self.name = f"fixed window {limit}/{window:g} s (Postfix anvil), {max_connections} conn"

    def _event(self, now: float) -> None:
        # anvil keeps whole seconds (time_t): a window lasts from 60 to almost 62 s.
        second = math.floor(now)
        if self.start is None or self.start + self.window < second:
            self.start, self.count = second, 0

    def connect(self, now: float) -> Reply | None:
        self._event(now)
        return super().connect(now)

    def greeting_refusal(self) -> Reply:
        return self.greeting_reply

    def mail(self, now: float, session: Session) -> Reply | None:
        self._event(now)
        self.mail_commands += 1
        self.count += 1
        if self.count > self.limit:
            self.refused_mail += 1
            session.errors += 1
            if session.errors >= self.hard_errors:
                return (421, "4.7.0 pacing.test.invalid Error: too many errors")
            return self.mail_reply
        return None

    def delivered(self, now: float, session: Session) -> None:
        session.errors = 0

    def reply_delay(self, session: Session) -> float:
        return 1.0 if session.errors > self.soft_errors else 0.0

    def ideal(self, n: int) -> float:
        return n * self.window / self.limit


class SlidingWindow(Provider):
    """At most `limit` accepted messages in any `window` seconds."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_connections: int,
        mail_reply: Reply = (452, "4.4.5 Messages per second limit exceeded"),
    ) -> None:
        super().__init__()
        self.limit = limit
        self.window = window
        self.max_connections = max_connections
        self.accepted: deque[float] = deque()
        self.mail_reply = mail_reply
        self.name = f"sliding window {limit}/{window:g} s, {max_connections} conn"

    def decide(self, now: float) -> Reply | None:
        while self.accepted and self.accepted[0] <= now - self.window:
            self.accepted.popleft()
        if len(self.accepted) >= self.limit:
            return self.mail_reply
        self.accepted.append(now)
        return None

    def ideal(self, n: int) -> float:
        return n * self.window / self.limit


# --------------------------------------------------------------------------- the client


@dataclass
class Session:
    errors: int = 0


@dataclass
class Job:
    index: int
    tries: int = 0
    first_refused: float | None = None


@dataclass
class SimResult:
    provider: str
    n: int
    ideal_s: float
    wall_s: float
    delivered: int
    failed: int
    duplicates: int
    mail_commands: int
    refused_mail: int
    refused_connections: int
    changes: list[str] = field(default_factory=list)
    max_rate_per_min: float = 0.0  # the most messages started in any 60 s window, per minute
    max_connections: int = 0
    stopped: str | None = None  # why the run gave up (--max-wait), if it did

    @property
    def ratio(self) -> float:
        return self.wall_s / self.ideal_s if self.ideal_s else math.inf

    @property
    def refused_share(self) -> float:
        return self.refused_mail / self.mail_commands if self.mail_commands else 0.0

    def row(self) -> str:
        return (
            f"| {self.provider} | {self.n:,} | {self.ideal_s:,.0f} | {self.wall_s:,.0f} "
            f"| {self.ratio:.2f} | {self.refused_mail:,} / {self.mail_commands:,} "
            f"({self.refused_share:.1%}) | {self.refused_connections} | {self.failed} |"
        )


def simulate(
    provider: Provider,
    n: int,
    *,
    concurrency: int = 4,
    rate: float | None = None,
    max_wait: float = 1800.0,
    rtt: float = 0.001,
    transfer: float = 0.002,
    pacer_factory: Callable[..., Pacer] = Pacer,
    horizon: float | None = None,
) -> SimResult:
    """One run of `n` single-recipient messages through `provider`, paced by a Pacer."""
    sim = Sim()
    pacer = pacer_factory(rate=rate, connections=concurrency, max_wait=max_wait, clock=sim.clock)
    fresh: Iterator[int] = iter(range(n))
    retries: list[tuple[float, int, Job]] = []
    seq = itertools.count()
    delivered: dict[int, int] = {}
    failed: set[int] = set()
    changes: list[str] = []
    starts: deque[float] = deque()
    peak = {"rate": 0, "connections": 0}
    live: set[int] = set()
    done: dict[str, Any] = {"left": n, "end": 0.0, "stopped": False, "why": None}

    def note(change: object) -> None:
        if change is not None:
            changes.append(f"{sim.now:9.2f}s {change}")

    def next_job() -> Job | float | None:
        """A due retry, else a fresh message; a float: wait that long; None: nothing left."""
        if retries and retries[0][0] <= sim.now:
            return heapq.heappop(retries)[2]
        index = next(fresh, None)
        if index is not None:
            return Job(index)
        if retries:
            return retries[0][0] - sim.now
        return None

    def finish(job: Job) -> None:
        done["left"] -= 1
        done["end"] = max(done["end"], sim.now)

    def give_up(job: Job) -> None:
        failed.add(job.index)
        finish(job)

    def refused(job: Job, slot: Slot, reply: Reply) -> None:
        signal, change = pacer.refused(slot, *reply)
        note(change)
        job.tries += 1
        if job.first_refused is None:
            job.first_refused = sim.now
        delay = pacer.retry_after(signal, job.tries, job.first_refused)
        if delay is None:
            give_up(job)
        else:
            heapq.heappush(retries, (sim.now + delay, next(seq), job))

    gate: deque[Process] = deque()  # workers waiting for their turn at the pace, in order
    gate_busy = {"held": False}

    def pace(me: list[Process]) -> Generator[float | None, None, Slot]:
        """Wait for a booked slot, first come first served (asyncio.Lock is fair too)."""
        if gate_busy["held"]:
            gate.append(me[0])
            yield None  # parked until the worker before hands over
        gate_busy["held"] = True
        slot = pacer.reserve()
        while not slot.booked:
            yield slot.wait
            slot = pacer.reserve()
        if gate:
            sim.wake(gate.popleft())  # the gate passes straight to the next in line
        else:
            gate_busy["held"] = False
        return slot

    def worker(number: int, me: list[Process]) -> Process:
        session: Session | None = None
        try:
            while done["left"] > 0 and not done["stopped"]:
                if number >= pacer.connections:
                    return
                why = pacer.stalled()
                if why is not None:
                    if not done["stopped"]:
                        done["stopped"], done["why"], done["end"] = True, why, sim.now
                    return
                slot = yield from pace(me)
                job = next_job()  # chosen once the slot is ours: a due retry goes first
                if job is None:
                    return
                if isinstance(job, float):
                    yield min(job, 1.0)
                    continue
                if session is None:
                    yield rtt  # connect and greeting
                    refusal = provider.connect(sim.now)
                    if refusal is not None:
                        others = len(live) - 1
                        note(pacer.connection_refused(*refusal, open_connections=others))
                        heapq.heappush(retries, (sim.now, next(seq), job))
                        if others:
                            return
                        continue
                    session = Session()
                    yield rtt  # EHLO
                starts.append(sim.now)
                while starts and starts[0] <= sim.now - 60.0 + 1e-6:
                    starts.popleft()
                peak["rate"] = max(peak["rate"], len(starts))
                yield rtt + provider.reply_delay(session)  # MAIL
                refusal = provider.mail(sim.now, session)
                if refusal is not None:
                    refused(job, slot, refusal)
                    if refusal[0] == 421:
                        provider.disconnect(sim.now)
                        session = None
                    else:
                        yield rtt + provider.reply_delay(session)  # RSET
                    continue
                yield 2 * rtt + transfer  # RCPT, DATA, the data and its reply
                provider.delivered(sim.now, session)
                delivered[job.index] = delivered.get(job.index, 0) + 1
                note(pacer.accepted(slot))
                finish(job)
                spawn_more()
        finally:
            live.discard(number)
            if session is not None:
                provider.disconnect(sim.now)

    def spawn_more() -> None:
        while len(live) < pacer.connections and done["left"] > 0:
            number = min(set(range(pacer.connections)) - live)
            live.add(number)
            peak["connections"] = max(peak["connections"], len(live))
            me: list[Process] = []
            me.append(worker(number, me))
            sim.spawn(me[0])
            if number not in live:
                return  # it found nothing to do

    spawn_more()
    sim.run(horizon if horizon is not None else provider.ideal(n) * 20 + 3600)
    for _, _, job in retries:
        failed.add(job.index)
    missing = n - len(delivered) - len(failed)
    return SimResult(
        provider=provider.name,
        n=n,
        ideal_s=provider.ideal(n),
        wall_s=done["end"],
        delivered=len(delivered),
        failed=len(failed) + max(0, missing),
        duplicates=sum(1 for c in delivered.values() if c > 1),
        mail_commands=provider.mail_commands,
        refused_mail=provider.refused_mail,
        refused_connections=provider.refused_connections,
        changes=changes,
        max_rate_per_min=float(peak["rate"]),
        max_connections=peak["connections"],
        stopped=done["why"],
    )


SWEEP: list[tuple[Callable[[], Provider], int, float]] = [
    (lambda: TokenBucket(600, 20, 2), 2000, 0.001),
    (lambda: TokenBucket(600, 20, 2), 2000, 0.025),
    (lambda: TokenBucket(200, 5, 1), 2000, 0.001),
    (lambda: TokenBucket(3000, 50, 4), 2000, 0.001),
    (lambda: TokenBucket(6000, 10, 4), 2000, 0.001),
    (lambda: TokenBucket(1000, 100, 2), 2000, 0.01),
    (lambda: TokenBucket(400, 3, 2), 2000, 0.001),
    (lambda: TokenBucket(120, 10, 3), 2000, 0.001),
    (lambda: TokenBucket(60, 30, 8), 2000, 0.001),
    (lambda: TokenBucket(30, 1, 3), 2000, 0.001),
    (
        lambda: TokenBucket(
            400, 10, 3, mail_reply=(421, "4.7.28 unusual rate of unsolicited mail - gsmtp")
        ),
        2000,
        0.025,
    ),
    (lambda: FixedWindow(10, 60, 2), 200, 0.001),
    (lambda: FixedWindow(30, 60, 3), 600, 0.001),
    (lambda: FixedWindow(100, 60, 2), 2000, 0.001),
    (lambda: SlidingWindow(50, 60, 3), 2000, 0.001),
    (lambda: SlidingWindow(5, 1, 2), 2000, 0.001),
]


def main() -> int:
    """Print the sweep as a Markdown table (default settings: no --rate, 4 connections)."""
    print("| model | RTT ms | N | ideal s | simulated s | ratio | refused MAIL / MAIL |", end="")
    print(" refused conn | failed | pace changes |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for make, n, rtt in SWEEP:
        r = simulate(make(), n, rtt=rtt)
        print(
            f"| {r.provider} | {rtt * 1000:g} | {n:,} | {r.ideal_s:,.0f} | {r.wall_s:,.0f} "
            f"| {r.ratio:.2f} | {r.refused_mail:,} / {r.mail_commands:,} "
            f"({r.refused_share:.1%}) | {r.refused_connections} | {r.failed} "
            f"| {len(r.changes)} |"
        )
    return 0


__all__ = [
    "FixedWindow",
    "Provider",
    "SimResult",
    "SlidingWindow",
    "TokenBucket",
    "simulate",
]

_ = Signal  # re-exported for the tests' convenience

if __name__ == "__main__":
    import sys

    sys.exit(main())
