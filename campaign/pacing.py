"""The pace of a send run: how fast and over how many connections, adapted to the server's limits.

Pure: no I/O, no asyncio; time comes from an injected clock. The send loop asks the
`Pacer` for a slot before each message, and tells it what the server answered.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Signal(StrEnum):
    """What a server reply means for the pace of the whole run."""

    NONE = "none"  # accepted, or a refusal pacing cannot help (5xx)
    TEMPORARY = "temporary"  # an ordinary 4xx for this message: retry it later, pace unchanged
    RATE = "rate"  # the server limits the message rate: slow the whole run
    CONNECTIONS = "connections"  # the server limits connections per client: use fewer


# --------------------------------------------------------------------------- the rule table

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def _enhanced(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code a reply's text starts with, if any."""
    match = _ENHANCED.match(text)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(phrases), re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """One line of the table: a 4xx reply matching `enhanced` and/or `text` means `signal`."""

    name: str
    signal: Signal
    why: str
    enhanced: Callable[[tuple[int, int, int] | None], bool] | None = None
    text: re.Pattern[str] | None = None
    codes: frozenset[int] | None = None

    def matches(self, code: int, enhanced: tuple[int, int, int] | None, text: str) -> bool:
        if self.codes is not None and code not in self.codes:
            return False
        if self.enhanced is not None and not self.enhanced(enhanced):
            return False
        return self.text is None or self.text.search(text) is not None


# First match wins; only 4xx replies reach the table (2xx/3xx: NONE, 5xx: NONE, none: TEMPORARY).
RULES: tuple[Rule, ...] = (
    Rule(
        "greylisting",
        Signal.TEMPORARY,
        "greylisting defers a (client, sender, recipient) triple once; waiting helps, a slower"
        " run does not (postgrey 450 4.2.0, milter-greylist 451 4.7.1 'Greylisting in action')",
        text=_words(r"gr[ae]y ?list"),
    ),
    Rule(
        "too many recipients in one transaction",
        Signal.TEMPORARY,
        "RFC 5321 452 / X.5.3: send the remaining recipients in another transaction"
        " (Postfix '452 4.5.3 Error: too many recipients'); not a rate",
        enhanced=lambda e: e is not None and e[1:] == (5, 3),
    ),
    Rule(
        "the recipient's mailbox",
        Signal.TEMPORARY,
        "the recipient's mailbox is busy, full or receiving too fast (Gmail '450 4.2.1 The user"
        " you are trying to contact is receiving mail at a rate...'): only that letter waits",
        text=_words(
            r"user you are trying to contact",
            r"mailbox",
            r"over quota",
            r"is receiving (e-?)?mail",
        ),
    ),
    Rule(
        "connection limit",
        Signal.CONNECTIONS,
        "too many connections from this client (Postfix '421 4.7.0 host Error: too many"
        " connections from 127.0.0.1', Exim '421 ... Too many concurrent SMTP connections',"
        " Microsoft 365 '432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded')",
        text=_words(
            r"too many (concurrent |simultaneous |open |smtp )*(connections|sessions)",
            r"concurrent (smtp )?(connection|session)",
            r"connection (count )?limit",
            r"connections from",
            r"thread limit",
            r"too many (smtp )?sessions",
        ),
    ),
    Rule(
        "message rate limit",
        Signal.RATE,
        "the server says the client sends too much or too fast (Postfix '450 4.7.1 Error: too"
        " much mail from ...', Gmail '421 4.7.28 ... unusual rate', Microsoft 365 '451 4.7.500"
        " Server busy', Yahoo '421 4.7.0 [TSS04] ... unexpected volume')",
        text=_words(
            r"rate",
            r"too (much|many)",
            r"throttl",
            r"exceed",
            r"limit",
            r"too fast",
            r"slow down",
            r"busy",
            r"volume",
            r"try (again )?later",
        ),
    ),
    Rule(
        "service closing",
        Signal.RATE,
        "421: the server is shedding load and closing the channel (RFC 5321 3.8)",
        codes=frozenset({421}),
    ),
    Rule(
        "policy (4.7.x) or system not accepting (4.3.2)",
        Signal.RATE,
        "a temporary policy refusal or a server not accepting messages now, with no other"
        " cue: a server-wide 4xx slows the run rather than being retried per recipient",
        enhanced=lambda e: e is not None and (e[1] == 7 or e[1:] == (3, 2)),
    ),
)


def classify_reply(code: int | None, text: str) -> Signal:
    """What one server reply means for the pace; see RULES for the table and its reasons.

    `code` None is no reply at all (a connection refused or lost): TEMPORARY here; the
    Pacer's `connection_refused` decides whether it shows a connection limit.
    """
    if code is None:
        return Signal.TEMPORARY
    if code < 400 or code >= 500:
        return Signal.NONE
    enhanced = _enhanced(text)
    for rule in RULES:
        if rule.matches(code, enhanced, text):
            return rule.signal
    return Signal.TEMPORARY


def rule_for(code: int, text: str) -> Rule | None:
    """The table line a 4xx reply matched (for messages and tests)."""
    enhanced = _enhanced(text)
    return next((rule for rule in RULES if rule.matches(code, enhanced, text)), None)


# --------------------------------------------------------------------------- the pacer


@dataclass(frozen=True, slots=True)
class Slot:
    """An answer to `reserve()`: start now (`wait` 0, the slot is booked), or ask again later."""

    wait: float  # seconds to wait before asking again; 0: the message starts now
    epoch: int = 0  # the pace it was booked under (a refusal under an older pace is no news)
    paced: bool = False  # the pace, not the client, decided when it started

    @property
    def booked(self) -> bool:
        return self.wait <= 0


@dataclass(frozen=True, slots=True)
class Pace:
    """The run's pace now: messages per minute (None: not limited) over `connections`."""

    per_minute: float | None
    connections: int

    def describe(self) -> str:
        rate = "no rate limit" if self.per_minute is None else f"{_per_minute(self.per_minute)}/min"
        return f"{rate}, {self.connections} connection{'s' if self.connections != 1 else ''}"


@dataclass(frozen=True, slots=True)
class PaceChange:
    """A change of pace and why, for the progress display and the send log."""

    before: Pace
    after: Pace
    signal: Signal
    reply: str  # the reply that caused it ("" for a recovery)
    message: str  # "slowed to 18/min: 451 4.7.1 rate limited"

    def __str__(self) -> str:
        return self.message

    def fields(self) -> dict[str, object]:
        """The change as fields of a send-log event (`pace`)."""
        return {
            "per_minute": None if self.after.per_minute is None else round(self.after.per_minute, 2),
            "connections": self.after.connections,
            "before_per_minute": (
                None if self.before.per_minute is None else round(self.before.per_minute, 2)
            ),
            "before_connections": self.before.connections,
            "signal": str(self.signal),
            "reply": self.reply,
            "message": self.message,
        }


def _per_minute(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def _clean(text: str, limit: int = 120) -> str:
    """A reply as one short printable line (server text is untrusted)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


GUESS_WINDOW = 10.0  # s: at the first refusal, read what was accepted as a minute's allowance
SLOW_START = 2.0  # until the pace is first refused: an accepted message doubles it ...
SLOW_START_PERIOD = 0.25  # ... at most once in this many seconds
REFILL_PROBE = 0.25  # s: after the first refusal, the first try comes this soon
RECHECK = 0.5  # s: the longest a waiting connection sleeps before asking again
APPROACH = 0.1  # below the pace last refused: each accepted message closes this share of the gap
GROWTH = 0.005  # (and adds at least this share) ...
NEAR = 0.98  # ... up to this share of it
PROBE = 0.001  # ... and beyond it, this share, doubled every PROBE_DOUBLING messages
PROBE_DOUBLING = 20
MAX_PROBE = 0.05
DECREASE = 0.15  # a refusal after many accepted messages takes this share away, after few more
HOLD_CAP = 15.0  # s: while every try is refused, the pause between tries doubles up to this ...
HOLD_MAX = 300.0  # ... then grows with the time refused so far, up to this
RECENT = 8  # accepted messages that tell the pace the run really kept


class Pacer:
    """The whole run's pace: message starts spaced over the allowed connections.

    `rate` (messages per minute) and `connections` are the user's ceilings and are never
    exceeded. A rate-limit refusal slows the whole run; accepted messages speed it up
    again, carefully.
    """

    def __init__(
        self,
        *,
        rate: float | None = None,
        connections: int = 4,
        max_wait: float = 1800.0,
        retries: int = 3,
        backoff: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.ceiling_rate = rate / 60.0 if rate else None  # per second
        self.ceiling_connections = connections
        self.max_wait = max_wait
        self.retries = retries
        self.backoff = backoff
        self._clock = clock
        self._rate = self.ceiling_rate  # per second; None: not limited
        self._connections = connections
        self._epoch = 0
        self._last_start = -math.inf  # the latest slot booked
        self._hold_until = -math.inf
        self._hold = 0.0
        self._started = clock()
        self._slow_start = True
        self._grown = -math.inf
        self._refusals = 0
        self._refused_at = -math.inf  # the last rate refusal that counted
        self._closed = 0  # refusals since the last accepted message
        # A cycle runs from one reopening of the limit to the next (or from the start): what got
        # through in it is what the server sustains, unless slow start was still probing.
        self._cycle_start = self._started
        self._cycle_accepted = 0
        self._cycle_valid = True
        self._probing = 0  # accepted messages since the pace passed the pace last refused
        self._refused_pace: float | None = None  # the pace of the last refusal (per second)
        self._accepted_since_refusal = 0
        self._shown = self.pace  # the pace last reported
        self._accepted_total = 0
        self._first_unanswered: float | None = None  # first refusal since the last acceptance
        self._last_reply = ""
        self._accepts: deque[float] = deque(maxlen=RECENT)

    # -- what the send loop asks

    @property
    def pace(self) -> Pace:
        return Pace(None if self._rate is None else self._rate * 60.0, self._connections)

    @property
    def connections(self) -> int:
        """How many connections the run may hold now (close any beyond this)."""
        return self._connections

    def reserve(self) -> Slot:
        """Book a message start now, or say how long to wait before asking again.

        A slot is only ever booked for now, so a change of pace applies at once to every
        connection that is waiting.
        """
        now = self._clock()
        interval = self._interval() if self._rate is not None else 0.0
        due = max(self._hold_until, self._last_start + interval)
        if due > now:
            # Ask again soon rather than sleep through a change of pace.
            return Slot(min(due - now, RECHECK), self._epoch)
        # Paced: this start is as early as the pace allowed (not late because of the client).
        paced = self._rate is not None and now - due <= 0.1 * interval + 0.005
        self._last_start = now
        return Slot(0.0, self._epoch, paced)

    def stalled(self) -> str | None:
        """Why the run should give up now (nothing accepted for max_wait), or None."""
        if self._first_unanswered is None:
            return None
        waited = self._clock() - self._first_unanswered
        if waited < self.max_wait:
            return None
        return (
            f"nothing accepted for {waited / 60:.0f} min (--max-wait);"
            f" last reply: {self._last_reply}"
        )

    def retry_after(self, signal: Signal, tries: int, first_refused: float) -> float | None:
        """Seconds until a refused message may be tried again; None: give up (deferred).

        Rate and connection refusals are retried as soon as the pace allows (their slot
        spaces them); other temporary failures back off exponentially, at most `retries`
        times. Nothing is retried once `max_wait` has passed since its first refusal.
        """
        now = self._clock()
        if signal in (Signal.RATE, Signal.CONNECTIONS):
            delay = 0.0
        elif signal == Signal.TEMPORARY and tries <= self.retries:
            delay = self.backoff * 2 ** (tries - 1)
        else:
            return None
        if now + delay - first_refused > self.max_wait:
            return None
        return delay

    # -- what the send loop tells it

    def accepted(self, slot: Slot) -> PaceChange | None:
        """A message was accepted; the pace may grow back towards the ceiling."""
        now = self._clock()
        self._accepted_total += 1
        self._accepts.append(now)
        self._first_unanswered = None
        if slot.epoch < self._epoch:
            return None  # sent before the last refusal: no news about the pace since
        self._accepted_since_refusal += 1
        self._hold = 0.0
        reopened = self._closed >= 2
        self._closed = 0
        if reopened and self._rate is not None:
            # The limit let mail through again after holding it back for a while (a window
            # that reset, a bucket that refilled): what got through over the whole cycle is
            # what the server sustains.
            if self._cycle_valid and self._cycle_accepted >= 2:
                sustained = self._cycle_accepted / (now - self._cycle_start)
                self._rate = min(self._rate, sustained)
                self._refused_pace = sustained
                self._probing = 0
            self._cycle_start, self._cycle_accepted, self._cycle_valid = now, 0, True
        self._cycle_accepted += 1
        rate = self._rate
        if rate is None or rate == self.ceiling_rate or not slot.paced:
            return None  # not held back by the pace: growing it would mean nothing
        if self._slow_start:
            if now - self._grown < SLOW_START_PERIOD:
                return None
            rate *= SLOW_START
            if self._accepted_since_refusal == 1 and now > self._refused_at:
                # The first message through after a refusal: the server refilled at least
                # one message's worth in that time.
                rate = max(rate, 1.0 / (now - self._refused_at))
            self._cycle_valid = False
        elif self._refused_pace is None:
            rate *= 1.0 + GROWTH
        elif rate < NEAR * self._refused_pace:
            # Back towards the pace last refused: quickly at first, gently near it.
            target = NEAR * self._refused_pace
            rate = min(target, rate + max((target - rate) * APPROACH, rate * GROWTH))
        else:
            # Beyond the pace last refused: cautiously, then faster the longer it holds.
            self._probing += 1
            rate *= 1.0 + min(MAX_PROBE, PROBE * 2 ** (self._probing / PROBE_DOUBLING))
        if self.ceiling_rate is not None and rate >= self.ceiling_rate:
            rate = self.ceiling_rate
        self._rate = rate
        self._grown = now
        if self._quiet():
            return None
        return self._change(self._shown, Signal.NONE, "", "sped up")

    def refused(self, slot: Slot, code: int | None, text: str) -> tuple[Signal, PaceChange | None]:
        """A temporary refusal of the message booked in `slot`: its signal, and any change."""
        signal = classify_reply(code, text)
        if signal not in (Signal.RATE, Signal.CONNECTIONS):
            return signal, None
        now = self._clock()
        reply = _clean(f"{code} {text}" if code is not None else text)
        self._last_reply = reply
        if self._first_unanswered is None:
            self._first_unanswered = now
        if slot.epoch < self._epoch:
            return signal, None  # booked before the last slow-down: already answered
        before = self.pace
        accepted = self._accepted_since_refusal
        self._accepted_since_refusal = 0
        self._closed += 1
        self._epoch += 1
        if self._rate is None:
            # The first limit seen: guess what got through was GUESS_WINDOW's allowance, and
            # try again soon: a message accepted then shows a faster refill than that.
            self._rate = max(self._accepted_total, 1) / max(now - self._started, GUESS_WINDOW)
            self._hold = min(self._interval(), REFILL_PROBE)
        elif accepted == 0 and self._refusals:
            # Refused again before anything got through: the limit has not reset yet (a
            # window, an empty bucket). No news about the rate; wait longer.
            if self._hold >= self._interval():
                self._slow_start = False  # even the guessed pace was too fast
            waited = now - (self._first_unanswered or now)
            self._hold = max(self._interval(), min(2 * self._hold, HOLD_CAP), waited / 4)
            self._hold = min(self._hold, HOLD_MAX)
        else:
            self._refused_pace = self._rate
            self._probing = 0
            if self._slow_start:
                factor = 0.5
                self._slow_start = False
            else:
                factor = max(0.5, 1.0 - DECREASE - 0.35 / max(accepted, 1))
            self._rate *= factor
            self._hold = self._interval()
        self._refusals += 1
        if self.ceiling_rate is not None:
            self._rate = min(self._rate, self.ceiling_rate)
        self._rate = max(self._rate, 1.0 / HOLD_MAX)
        self._hold_until = now + self._hold
        self._last_start = -math.inf  # after a refusal the hold, not the spacing, says when
        self._refused_at = now
        return signal, self._change(before, signal, reply, "slowed")

    def connection_refused(
        self, code: int | None, text: str, *, open_connections: int
    ) -> PaceChange | None:
        """A connection could not be opened (a 421 greeting, refused, reset before EHLO).

        With `open_connections` others up, it shows a per-client connection limit: the run
        keeps those. With none up, a limit reply holds the run back like a rate refusal;
        no reply at all is the caller's to handle (the server may be down).
        """
        reply = _clean(f"{code} {text}" if code is not None else text)
        before = self.pace
        if open_connections >= 1:
            if open_connections >= self._connections:
                return None
            self._connections = open_connections
            self._last_reply = reply
            return self._change(before, Signal.CONNECTIONS, reply, "fewer connections")
        signal = classify_reply(code, text)
        if signal not in (Signal.RATE, Signal.CONNECTIONS):
            return None
        now = self._clock()
        self._last_reply = reply
        if self._first_unanswered is None:
            self._first_unanswered = now
        self._hold = min(HOLD_MAX, max(self._hold * 2, self._interval()))
        self._hold_until = now + self._hold
        self._connections = 1
        return self._change(before, signal, reply, "slowed")

    # -- inside

    def _interval(self) -> float:
        return 1.0 / self._rate if self._rate else 1.0

    def _achieved(self) -> float:
        """Messages accepted per second lately: the pace the run really kept."""
        accepts = self._accepts
        if len(accepts) < 2:
            return math.inf
        span = accepts[-1] - accepts[0]
        return (len(accepts) - 1) / span if span > 0 else math.inf

    def _quiet(self) -> bool:
        """A speed-up too small to report (under a fifth above the pace last reported)."""
        after, shown = self.pace, self._shown
        if after.connections != shown.connections:
            return False
        if after.per_minute is None or shown.per_minute is None:
            return after.per_minute == shown.per_minute
        return after.per_minute < shown.per_minute * 1.2

    def _change(self, before: Pace, signal: Signal, reply: str, verb: str) -> PaceChange:
        after = self.pace
        if after.per_minute is None:
            what = f"{verb}: no rate limit"
        else:
            what = f"{verb} to {_per_minute(after.per_minute)}/min"
        if after.connections != before.connections:
            what += f", {after.connections} connection{'s' if after.connections != 1 else ''}"
        message = f"{what}: {reply}" if reply else what
        self._shown = after
        return PaceChange(before, after, signal, reply, message)
