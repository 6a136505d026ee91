"""Write a realistic send log for a generated campaign, without sending anything.

For measuring `campaign log` on a long log (issue 6: 1,000,000 events for the
100,000-recipient campaign). The records have exactly the shapes `campaign
send` writes, built by the same functions (campaign/sendlog.py's record builders,
`stamped` and `log_line`): the same keys in the same order, the same compact JSON,
the campaign id, recipient ids,
normalised addresses, Message-IDs and archive names the product derives from
the campaign file (read with the product's own loader).

The story the log tells, deterministic for a seed:

* The campaign goes out through a provider that accepts about `quota` of the
  campaign per run (per hour); past that it answers every MAIL with
  `451 4.7.0` (quota exceeded). The campaigner runs `campaign send` once an
  hour, so runs follow one another; each retries a deferred message three
  times (four tries a run, as `--retries 3` does) before leaving it deferred.
* Within the quota a few tries are greylisted (`451 4.7.1`) and retried.
* A few addresses do not exist (`550 5.1.1`): a recipient with several
  addresses, one of them refused, ends *partial*; with a single one, *failed*.
* The first run writes one `planned` record per recipient; every run starts
  with `run-start` and, when it completes, ends with `run-end`.
* Deliveries overlap as over K = 8 connections: attempts and results interleave.
* Lines stop at exactly `events`: the run in progress then is taken as killed
  (no `run-end`), and its attempts still in flight have no result, so their
  recipients read as *unknown*.

`genlog(...)` returns the expected status of every recipient (computed here,
independently of the product's replay), so a reader of the log can be checked.

    python bench/genlog.py CAMPAIGN.yaml OUT.jsonl --events 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import random
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from campaign.archive import archive_name
from campaign.sendlog import (
    AddressReply,
    Outcome,
    Record,
    Status,
    attempt_record,
    log_line,
    planned_record,
    result_record,
    run_end_record,
    run_start_record,
    stamped,
)

ACCEPTED_REPLY = (250, "2.0.0 OK queued")
QUOTA_REPLY = (451, "4.7.0 Sending quota exceeded for this hour, try again later")
GREYLIST_REPLY = (451, "4.7.1 Greylisted, please try again later")
UNKNOWN_USER = "5.1.1 <{address}>: Recipient address rejected: User unknown"
TRANSPORT = "smtp://smtp.example.net:587"
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Letter:
    """What the product derives from the campaign file for one recipient."""

    rid: str
    addresses: tuple[str, ...]
    message_id: str
    filename: str
    content_hash: str
    sha256: str
    size: int


@dataclass
class _State:
    outcomes: dict[str, str]  # address -> accepted / refused / deferred / pending
    attempts: int = 0
    open: bool = False


@dataclass
class GenlogResult:
    path: Path
    campaign: str
    recipients: int
    events: int  # lines written
    runs: int
    complete_runs: int
    expected: dict[str, int]  # status -> recipients
    event_counts: dict[str, int] = field(default_factory=dict)
    quota: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "campaign": self.campaign,
            "recipients": self.recipients,
            "events": self.events,
            "runs": self.runs,
            "complete_runs": self.complete_runs,
            "expected": self.expected,
            "event_counts": self.event_counts,
            "quota": self.quota,
        }


def load_letters(yaml_path: Path) -> tuple[str, list[Letter]]:
    """The campaign id and every recipient's letter identity, via the product's loader."""
    from campaign.loading import Options, load_campaign
    from campaign.message import message_id_for
    from campaign.models import draft_filename

    source = load_campaign(Options(Path(yaml_path)))
    campaign = source.campaign
    total = len(source.recipients)
    rng = random.Random(f"sizes-{campaign.id}")
    letters = []
    for r in source.recipients:
        seed = f"{campaign.id}\0{r.id}".encode()
        letters.append(
            Letter(
                rid=r.id,
                addresses=tuple(r.addresses),
                message_id=message_id_for(campaign, r.id),
                filename=draft_filename(r.index, r.id, total),
                content_hash=hashlib.sha256(b"content\0" + seed).hexdigest(),
                sha256=hashlib.sha256(b"bytes\0" + seed).hexdigest(),
                size=rng.randint(11_200, 12_400),
            )
        )
    return campaign.id, letters


def status_of(outcomes: dict[str, str], open_attempt: bool) -> str:
    """A recipient's status, from the product's documented rules (not from its code)."""
    values = list(outcomes.values())
    if open_attempt:
        return "unknown"
    if not values or all(v == "pending" for v in values):
        return "pending"
    if all(v == "accepted" for v in values):
        return "sent"
    if "deferred" in values or "pending" in values:
        return "deferred"
    if "accepted" in values:
        return "partial"
    return "failed"


class _Budget(Exception):
    """The log has its lines: stop here, as a killed run would."""


class _Writer:
    def __init__(self, fh: BinaryIO, campaign: str, limit: int) -> None:
        self.fh = fh
        self.campaign = campaign
        self.limit = limit
        self.lines = 0
        self.clock = START
        self.counts: Counter[str] = Counter()

    def tick(self, seconds: float) -> None:
        self.clock += timedelta(seconds=seconds)

    def write(self, record: Record) -> None:
        """One record, stamped and written exactly as `campaign send` writes it."""
        if self.lines >= self.limit:
            raise _Budget
        time = self.clock.isoformat(timespec="milliseconds")
        self.fh.write(log_line(stamped(record, time=time, campaign=self.campaign)))
        self.lines += 1
        self.counts[record["event"]] += 1


def genlog(
    yaml_path: Path | str,
    out: Path | str,
    events: int = 1_000_000,
    *,
    seed: int = 1,
    concurrency: int = 8,
    quota: float = 0.3,
    greylist: float = 0.02,
    partial_rate: float = 0.005,
    failed_rate: float = 0.002,
    retries: int = 3,
) -> GenlogResult:
    """Write a log of exactly `events` lines (fewer only if everything ends sooner)."""
    campaign, letters = load_letters(Path(yaml_path))
    return write_log(
        campaign,
        letters,
        Path(out),
        events,
        seed=seed,
        concurrency=concurrency,
        quota=quota,
        greylist=greylist,
        partial_rate=partial_rate,
        failed_rate=failed_rate,
        retries=retries,
    )


def _refusals(
    letters: list[Letter], rng: random.Random, partial_rate: float, failed_rate: float
) -> dict[str, str]:
    """recipient id -> the address that does not exist (at least one partial and one failed)."""
    multi = [x for x in letters if len(x.addresses) > 1]
    single = [x for x in letters if len(x.addresses) == 1]
    refused: dict[str, str] = {}
    for pool, rate in ((multi, partial_rate), (single, failed_rate)):
        if not pool:
            continue
        k = min(len(pool), max(1, round(len(pool) * rate)))
        for letter in rng.sample(pool, k):
            refused[letter.rid] = letter.addresses[-1]
    return refused


def write_log(
    campaign: str,
    letters: list[Letter],
    out: Path,
    events: int,
    *,
    seed: int = 1,
    concurrency: int = 8,
    quota: float = 0.3,
    greylist: float = 0.02,
    partial_rate: float = 0.005,
    failed_rate: float = 0.002,
    retries: int = 3,
) -> GenlogResult:
    rng = random.Random(seed)
    refused = _refusals(letters, rng, partial_rate, failed_rate)
    by_id = {x.rid: x for x in letters}
    states = {x.rid: _State({a: "pending" for a in x.addresses}) for x in letters}
    planned_ids: set[str] = set()
    per_run_quota = max(1, math.ceil(len(letters) * quota))
    runs = complete_runs = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        w = _Writer(fh, campaign, events)
        try:
            while True:
                todo = [
                    x.rid
                    for x in letters
                    if status_of(states[x.rid].outcomes, states[x.rid].open)
                    in ("pending", "deferred")
                ]
                if not todo:
                    break
                runs += 1
                w.clock = START + timedelta(hours=runs - 1)
                run_id = f"{rng.getrandbits(48):012x}"
                w.write(
                    run_start_record(
                        run=run_id,
                        pid=rng.randint(2000, 99999),
                        transport=TRANSPORT,
                        planned=len(todo),
                        test=False,
                    )
                )
                for letter in letters:
                    if letter.rid not in planned_ids:
                        w.tick(0.00002)
                        w.write(
                            planned_record(
                                run=run_id,
                                recipient=letter.rid,
                                addresses=letter.addresses,
                                content_hash=letter.content_hash,
                            )
                        )
                        planned_ids.add(letter.rid)
                counts = _run(
                    w, run_id, todo, by_id, states, refused, rng, concurrency,
                    per_run_quota, greylist, retries,
                )  # fmt: skip
                w.write(
                    run_end_record(
                        run=run_id, counts={Status(k): n for k, n in counts.items()}, stopped=None
                    )
                )
                complete_runs += 1
        except _Budget:
            pass
    expected = Counter(status_of(s.outcomes, s.open) for s in states.values())
    return GenlogResult(
        path=out,
        campaign=campaign,
        recipients=len(letters),
        events=w.lines,
        runs=runs,
        complete_runs=complete_runs,
        expected=dict(sorted(expected.items())),
        event_counts=dict(sorted(w.counts.items())),
        quota=quota,
    )


def _run(
    w: _Writer,
    run_id: str,
    todo: list[str],
    by_id: dict[str, Letter],
    states: dict[str, _State],
    refused: dict[str, str],
    rng: random.Random,
    concurrency: int,
    per_run_quota: int,
    greylist: float,
    retries: int,
) -> Counter[str]:
    """One run over K connections; raises _Budget when the log is full."""
    queue: deque[tuple[str, tuple[str, ...], int]] = deque()
    for rid in todo:
        outcomes = states[rid].outcomes
        queue.append(
            (rid, tuple(a for a, o in outcomes.items() if o in ("pending", "deferred")), 0)
        )
    later: list[tuple[float, int, tuple[str, tuple[str, ...], int]]] = []  # retries, by time
    in_flight: list[tuple[str, tuple[str, ...], int, int]] = []
    accepted = 0
    elapsed = 0.0
    order = 0
    while queue or in_flight or later:
        while later and later[0][0] <= elapsed:
            queue.append(heapq.heappop(later)[2])
        if queue and len(in_flight) < concurrency:
            rid, addresses, tries = queue.popleft()
            letter = by_id[rid]
            st = states[rid]
            w.write(
                attempt_record(
                    run=run_id,
                    recipient=rid,
                    addresses=addresses,
                    all_addresses=letter.addresses,
                    message_id=letter.message_id,
                    attempt=st.attempts + 1,
                    content_hash=letter.content_hash,
                    sha256=letter.sha256,
                    size=letter.size,
                    transport=TRANSPORT,
                )
            )
            st.attempts += 1  # after the write: a killed run never wrote what it did not do
            st.open = True
            in_flight.append((rid, addresses, tries, st.attempts))
            continue
        if not in_flight:  # only retries waiting: the clock jumps to the next one
            elapsed = later[0][0]
            continue
        rid, addresses, tries, attempt = in_flight.pop(rng.randrange(len(in_flight)))
        step = rng.uniform(0.001, 0.004)
        elapsed += step
        w.tick(step)
        letter = by_id[rid]
        st = states[rid]
        replies: dict[str, AddressReply] = {}
        if accepted >= per_run_quota:
            replies = dict.fromkeys(addresses, AddressReply(Outcome.DEFERRED, *QUOTA_REPLY))
        elif rng.random() < greylist:
            replies = dict.fromkeys(addresses, AddressReply(Outcome.DEFERRED, *GREYLIST_REPLY))
        else:
            # The transport lists refused RCPTs first, then the accepted ones (one DATA reply).
            bad = [a for a in addresses if refused.get(rid) == a]
            for a in bad:
                replies[a] = AddressReply(Outcome.REFUSED, 550, UNKNOWN_USER.format(address=a))
            good = [a for a in addresses if a not in bad]
            for a in good:
                replies[a] = AddressReply(Outcome.ACCEPTED, *ACCEPTED_REPLY)
            if good:
                accepted += 1
        after = dict(st.outcomes)
        after.update((a, str(r.outcome)) for a, r in replies.items())
        archive = None
        if any(r.outcome == Outcome.ACCEPTED for r in replies.values()):
            archive = f"sent/{archive_name(letter.filename, letter.sha256)}"
        w.write(
            result_record(
                run=run_id,
                recipient=rid,
                attempt=attempt,
                message_id=letter.message_id,
                replies=replies,
                status=Status(status_of(after, False)),
                transport=TRANSPORT,
                archive=archive,
                sha256=letter.sha256 if archive else None,
            )
        )
        st.outcomes = after
        st.open = False
        retry = tuple(a for a, r in replies.items() if r.outcome == Outcome.DEFERRED)
        tries += 1
        if retry and tries <= retries:
            delay = 2.0 * 2 ** (tries - 1) * rng.uniform(0.5, 1.5)
            order += 1
            heapq.heappush(later, (elapsed + delay, order, (rid, retry, tries)))
    return Counter(status_of(states[rid].outcomes, states[rid].open) for rid in todo)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("campaign", type=Path, help="the campaign's recipients.yaml")
    p.add_argument("out", type=Path, help="the log to write (replaced)")
    p.add_argument("--events", type=int, default=1_000_000, help="lines (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--quota", type=float, default=0.3, help="share of the campaign per run")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    a = p.parse_args(argv)
    result = genlog(
        a.campaign, a.out, a.events, seed=a.seed, concurrency=a.concurrency, quota=a.quota
    )
    if a.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(
            f"{result.events:,} events ({result.runs} runs, {result.complete_runs} complete) for "
            f"{result.recipients:,} recipients of {result.campaign} -> {result.path}\n"
            f"expected: {result.expected}\nevents: {result.event_counts}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
