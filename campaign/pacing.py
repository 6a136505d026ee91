"""The pace of a send run: how fast and over how many connections, adapted to the server's limits.

Pure: no I/O, no asyncio; time comes from an injected clock. The send loop asks the
`Pacer` for a slot before each message, and tells it what the server answered.
"""

from __future__ import annotations

import math
import re
import time
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
        "the server's storage",
        Signal.TEMPORARY,
        "X.3.1: the server is short of room for this letter (Postfix '452 4.3.1 Insufficient"
        " system storage', at MAIL when the SIZE= of a large letter does not fit): it waits",
        enhanced=lambda e: e is not None and e[1:] == (3, 1),
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
    """An answer to `reserve()`: start now (`wait` 0: the slot is booked), or ask again later."""

    wait: float  # seconds to wait before asking again; 0: the message starts now
    epoch: int = 0  # the pace it was booked under (a refusal under an older pace is no news)
    start: float = 0.0  # clock time it was booked
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
        """'18/min over 2 connections', for the progress display."""
        rate = "no rate limit" if self.per_minute is None else f"{_per_minute(self.per_minute)}/min"
        return f"{rate} over {_connections(self.connections)}"


@dataclass(frozen=True, slots=True)
class PaceChange:
    """A change of pace and why, for the progress display and the send log."""

    before: Pace
    after: Pace
    signal: Signal  # NONE for a recovery
    reply: str  # the server's reply that caused it, one printable line ("" for a recovery)
    message: str  # "slowed to 18/min: 451 4.7.1 rate limited"

    def __str__(self) -> str:
        return self.message

    def fields(self) -> dict[str, object]:
        """The change as the fields of one send-log event (e.g. `log.append("pace", **f)`)."""
        return {
            "per_minute": _rounded(self.after.per_minute),
            "connections": self.after.connections,
            "before_per_minute": _rounded(self.before.per_minute),
            "before_connections": self.before.connections,
            "signal": str(self.signal),
            "reply": self.reply,
            "message": self.message,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _per_minute(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def _connections(count: int) -> str:
    return f"{count} connection{'s' if count != 1 else ''}"


def _clean(code: int | None, text: str, limit: int = 160) -> str:
    """A reply as one short printable line: server text is untrusted."""
    raw = text if code is None else f"{code} {text}"
    flat = " ".join("".join(c if c.isprintable() else " " for c in raw).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# The rule's constants; tests/test_pacing_sim.py shows what they give against many servers.
GUESS_WINDOW = 10.0  # s: at the first refusal, what got through is read as this long's allowance
REFILL_PROBE = 0.25  # s: ... and the first try after it comes this soon (a fast refill shows)
SLOW_START = 2.0  # until the pace is first refused, an accepted message doubles it ...
SLOW_START_PERIOD = 0.25  # ... at most once in this many seconds
DECREASE = 0.15  # a refusal takes this share off the pace, more after few accepted messages
NEAR = 0.97  # after a refusal the pace climbs back to this share of the pace refused ...
APPROACH = 0.2  # ... closing this share of the gap with each accepted message (at least
GROWTH = 0.005  # this share of the pace) ...
PROBE = 0.001  # ... then beyond it by this share, doubled every PROBE_DOUBLING messages
PROBE_DOUBLING = 50
MAX_PROBE = 0.05
LONG_CLOSURE = 5.0  # s, and ...
LONG_CLOSURE_INTERVALS = 8  # ... intervals: refused this long, the limit is a window that resets
HOLD_CAP = 10.0  # s: while every try is refused the pause between tries doubles to this, then
HOLD_MAX = 300.0  # grows with the time refused so far (a quarter of it), up to this
CONNECTION_HOLD = 1.0  # s: the least pause after a refused connection, none being open
RECHECK = 0.5  # s: the longest a waiting connection sleeps before asking again
CONNECTION_HEADROOM = 2.0  # connections kept: the pace times a message's duration, times this


class Pacer:
    """The whole run's pace: message starts spaced evenly, over the connections allowed.

    `rate` (messages per minute) and `connections` are the user's ceilings, never exceeded.
    A rate-limit refusal slows the whole run; accepted messages speed it up again, carefully.
    Every method is plain arithmetic on the injected clock: no I/O, no sleeping.
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
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.ceiling_rate = rate / 60.0 if rate else None  # per second
        self.ceiling_connections = connections
        self.max_wait = max_wait
        self.retries = retries
        self.backoff = backoff
        self._clock = clock
        self._rate = self.ceiling_rate  # per second; None: no limit at all
        self._limit_connections = connections  # what the server allows, as far as seen
        self._epoch = 0
        self._started: float | None = None  # the first slot
        self._last_start = -math.inf
        self._waited = False  # a reserve() was told to wait since the last slot was booked
        self._hold_until = -math.inf
        self._hold = 0.0
        self._slow_start = True
        self._grown = -math.inf
        self._refusals = 0
        self._refused_at = -math.inf
        self._refused_pace: float | None = None  # the pace of the last refusal (per second)
        self._probing = 0  # accepted messages since the pace passed the pace last refused
        self._since_refusal = 0  # accepted messages (of this epoch) since the last refusal
        self._closed = 0  # refusals since the last accepted message
        # A cycle runs from one reopening of the limit to the next: what got through in it
        # is what the server sustains (unless slow start was still feeling for the pace).
        self._cycle_start = 0.0
        self._cycle_accepted = 0
        self._cycle_valid = True
        self._accepted = 0
        self._duration: float | None = None  # a message's time from slot to acceptance
        self._first_unanswered: float | None = None  # first refusal since the last acceptance
        self._last_reply = ""
        self._shown = self.pace

    # -- what the send loop asks

    @property
    def pace(self) -> Pace:
        per_minute = None if self._rate is None else self._rate * 60.0
        return Pace(per_minute, self.connections)

    @property
    def connections(self) -> int:
        """How many connections the run may hold now: close any beyond this when idle."""
        allowed = self._limit_connections
        if self._rate is not None and self._duration is not None:
            needed = math.ceil(self._rate * self._duration * CONNECTION_HEADROOM) + 1
            allowed = min(allowed, needed)
        return max(1, allowed)

    def reserve(self) -> Slot:
        """Book a message start now, or say how long to wait before asking again.

        Only one connection should wait for a slot at a time, the others queuing behind it
        (an asyncio.Lock is fair), so that nobody is passed over. A slot is only ever booked
        for now, so a change of pace applies at once.
        """
        now = self._clock()
        if self._started is None:
            self._started = self._cycle_start = now
        due = max(self._hold_until, self._last_start + self._interval())
        if due > now:
            self._waited = True
            return Slot(min(due - now, RECHECK), self._epoch, now)
        # Paced: somebody had to wait for this slot, so the pace (not the client) binds.
        paced, self._waited = self._waited and self._rate is not None, False
        self._last_start = now
        return Slot(0.0, self._epoch, now, paced)

    def stalled(self) -> str | None:
        """Why the run should stop now (nothing accepted for `max_wait`), else None."""
        if self._first_unanswered is None:
            return None
        if self._clock() - self._first_unanswered < self.max_wait:
            return None
        return (
            f"nothing accepted for {_duration(self.max_wait)} (--max-wait);"
            f" last reply: {self._last_reply}"
        )

    def retry_after(self, signal: Signal, tries: int, first_refused: float) -> float | None:
        """Seconds until a refused message may be tried again; None: give up (deferred).

        `tries` counts its refusals so far, `first_refused` is the clock time of the first.
        Rate and connection refusals are retried as soon as the pace allows (the pace spaces
        them; put them before messages not tried yet); other temporary failures back off
        exponentially, at most `retries` times. Nothing is retried once `max_wait` has passed
        since its first refusal.
        """
        if signal in (Signal.RATE, Signal.CONNECTIONS):
            delay = 0.0
        elif signal == Signal.TEMPORARY and tries <= self.retries:
            delay = self.backoff * 2 ** (tries - 1)
        else:
            return None
        if self._clock() + delay - first_refused > self.max_wait:
            return None
        return delay

    # -- what the send loop tells it

    def accepted(self, slot: Slot) -> PaceChange | None:
        """The message booked in `slot` was accepted; the pace may grow back."""
        now = self._clock()
        self._accepted += 1
        closure = 0.0 if self._first_unanswered is None else now - self._first_unanswered
        self._first_unanswered = None
        duration = max(0.0, now - slot.start)
        self._duration = (
            duration if self._duration is None else 0.8 * self._duration + 0.2 * duration
        )
        if slot.epoch < self._epoch:
            return self._report()  # sent before the last refusal: no news about the pace
        self._since_refusal += 1
        self._hold = 0.0
        if self._closed >= 2 and self._rate is not None:
            # The limit lets mail through again after holding it back: a window that reset
            # (a long closure), or a bucket that refilled. What got through over the whole
            # cycle is what the server sustains; after a short closure the pauses were partly
            # ours, so the estimate at most halves the pace.
            long_closure = closure >= max(LONG_CLOSURE, LONG_CLOSURE_INTERVALS * self._interval())
            if long_closure:
                self._slow_start = False  # doubling would only spend each window faster
            measured = None
            if self._cycle_valid and self._cycle_accepted >= 2 and now > self._cycle_start:
                # It reopened between the last refused try and now: count from the middle.
                reopened = (self._refused_at + now) / 2 if long_closure else now
                sustained = self._cycle_accepted / max(reopened - self._cycle_start, 1e-3)
                floor = 0.0 if long_closure else 0.5 * self._rate
                before, previous = self.pace, self._rate
                self._rate = min(self._rate, max(sustained, floor))
                self._refused_pace = self._rate
                self._probing = 0
                if self._rate < 0.95 * previous:
                    measured = self._change(before, Signal.RATE, self._last_reply, "slowed")
            self._cycle_start, self._cycle_accepted, self._cycle_valid = now, 0, True
            if measured is not None:
                self._closed = 0
                self._cycle_accepted += 1
                return measured
        self._closed = 0
        self._cycle_accepted += 1
        if self._rate is not None and slot.paced and self._rate != self.ceiling_rate:
            self._grow(now)
        return self._report()

    def refused(
        self, slot: Slot, code: int | None, text: str, *, server_wide: bool = False
    ) -> tuple[Signal, PaceChange | None]:
        """A temporary refusal of the message booked in `slot`: its signal, and any change.

        Feed it every 4xx reply to MAIL, RCPT or DATA (and a 421 that closed the connection).
        `server_wide`: a refusal no recipient explains (at MAIL, before any): one the table
        has no line for slows the run like a rate limit, rather than being retried per letter.
        """
        signal = classify_reply(code, text)
        if server_wide and code is not None and rule_for(code, text) is None:
            signal = Signal.RATE
        if signal not in (Signal.RATE, Signal.CONNECTIONS):
            return signal, None
        now = self._clock()
        reply = _clean(code, text)
        self._last_reply = reply
        if self._first_unanswered is None:
            self._first_unanswered = now
        if slot.epoch < self._epoch:
            return signal, None  # booked before the last slow-down: already answered
        before = self.pace
        verb = "slowed"
        accepted, self._since_refusal = self._since_refusal, 0
        self._closed += 1
        self._epoch += 1
        if self._rate is None:
            # The first limit seen: read what got through as GUESS_WINDOW's allowance, and
            # try again soon: a message accepted then shows a faster refill than that.
            started = self._started if self._started is not None else now
            self._rate = max(self._accepted, 1) / max(now - started, GUESS_WINDOW)
            self._hold = min(self._interval(), REFILL_PROBE)
        elif accepted == 0 and self._refusals:
            # Refused again before anything got through: the limit has not reset yet (a
            # window, an empty bucket). No news about the rate: wait longer.
            verb = "waiting"
            waited = now - self._first_unanswered
            self._hold = min(
                HOLD_MAX, max(self._interval(), min(2 * self._hold, HOLD_CAP), waited / 4)
            )
        else:
            self._refused_pace = self._rate
            self._probing = 0
            if self._slow_start:
                factor = 0.5  # it doubled since the last pace that held
                self._slow_start = False
            else:
                factor = max(0.5, 1.0 - DECREASE - 0.35 / max(accepted, 1))
            self._rate *= factor
            self._hold = self._interval()
        self._refusals += 1
        self._rate = max(self._rate, 1.0 / HOLD_MAX)
        if self.ceiling_rate is not None:
            self._rate = min(self._rate, self.ceiling_rate)
            self._hold = max(self._hold, 1.0 / self.ceiling_rate)
        self._hold_until = min(now + self._hold, self._first_unanswered + self.max_wait)
        self._last_start = -math.inf  # after a refusal the hold, not the spacing, says when
        self._refused_at = now
        if verb == "waiting":
            verb = f"waiting {_duration(self._hold_until - now)}"
        return signal, self._change(before, signal, reply, verb)

    def connection_refused(
        self, code: int | None, text: str, *, open_connections: int
    ) -> PaceChange | None:
        """A connection could not be opened: a 421 greeting, or refused or reset before EHLO.

        `open_connections`: how many of this run's connections are up (past the greeting)
        now. With one or more up, the refusal shows a per-client connection limit: the run
        keeps those and opens no more. With none up, a limit reply (421, "too many
        connections") holds the run back like a rate refusal; a failure without such a
        reply (code None) is not the pacer's: the server may be down.
        """
        now = self._clock()
        reply = _clean(code, text)
        before = self.pace
        if open_connections >= 1:
            self._last_reply = reply
            if open_connections >= self._limit_connections:
                return None
            self._limit_connections = open_connections
            return self._change(before, Signal.CONNECTIONS, reply, "fewer connections")
        if code is None or classify_reply(code, text) not in (Signal.RATE, Signal.CONNECTIONS):
            return None
        self._last_reply = reply
        if self._first_unanswered is None:
            self._first_unanswered = now
        waited = now - self._first_unanswered
        self._hold = min(
            HOLD_MAX,
            max(self._interval(), CONNECTION_HOLD, min(2 * self._hold, HOLD_CAP), waited / 4),
        )
        self._hold_until = min(now + self._hold, self._first_unanswered + self.max_wait)
        self._last_start = -math.inf
        self._limit_connections = 1
        return self._change(before, Signal.CONNECTIONS, reply, f"waiting {_duration(self._hold)}")

    # -- inside

    def _interval(self) -> float:
        return 1.0 / self._rate if self._rate else 0.0

    def _grow(self, now: float) -> None:
        assert self._rate is not None
        rate = self._rate
        if self._slow_start:
            if now - self._grown < SLOW_START_PERIOD:
                return
            rate *= SLOW_START
            if self._since_refusal == 1 and now > self._refused_at:
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
        if self.ceiling_rate is not None:
            rate = min(rate, self.ceiling_rate)
        self._rate = rate
        self._grown = now

    def _report(self) -> PaceChange | None:
        """A speed-up worth showing: a tenth above the pace last shown, or other connections."""
        after, shown = self.pace, self._shown
        if after.connections == shown.connections and (
            after.per_minute is None
            or shown.per_minute is None
            or after.per_minute < shown.per_minute * 1.1
        ):
            return None
        verb = "sped up" if (after.per_minute or 0) >= (shown.per_minute or 0) else "slowed"
        return self._change(shown, Signal.NONE, "", verb)

    def _change(self, before: Pace, signal: Signal, reply: str, verb: str) -> PaceChange:
        after = self.pace
        if after.per_minute is None:
            what = f"{verb}: no rate limit"
        elif verb.startswith("waiting"):
            what = verb
        else:
            what = f"{verb} to {_per_minute(after.per_minute)}/min"
        if after.connections != before.connections:
            what += f", {_connections(after.connections)}"
        message = f"{what}: {reply}" if reply else what
        self._shown = after
        return PaceChange(before, after, signal, reply, message)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
