"""A reference send loop driven by campaign.pacing.Pacer: simple messages over aiosmtplib.

Not the product. It shows how a send loop is meant to call the Pacer (the lead's
pipeline follows the same steps), and checks the pacing rule against the benchmark
sink's provider mode or a real Postfix on loopback:

    python bench/paced_send.py --port 2525 --count 30            # e.g. a rate-limited Postfix
    python bench/paced_send.py --port P --count 2000 --json      # one JSON summary line

Every message goes to rN@example.com (N = 1..count) from campaign@example.org; only
127.0.0.1 is ever contacted. Each connection:

1. waits for a slot, one connection at a time behind a fair lock (`pacer.reserve()`);
2. takes the next message once the slot is its own: a retry that is due goes first;
3. connects if it has no connection (a refused greeting: `pacer.connection_refused`);
4. sends MAIL, RCPT, DATA: `pacer.accepted(slot)` on 250, `pacer.refused(slot, code,
   text)` on a 4xx, then `pacer.retry_after(...)` says when to try that message again;
5. stops when `pacer.stalled()` says so, leaving the rest deferred.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosmtplib

from campaign.pacing import PaceChange, Pacer, Signal

HOST = "127.0.0.1"
SENDER = "campaign@example.org"


@dataclass
class Job:
    number: int
    tries: int = 0
    first_refused: float = 0.0


@dataclass
class Run:
    pacer: Pacer
    count: int
    port: int
    started: float = field(default_factory=time.monotonic)
    fresh: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    retries: list[tuple[float, int, Job]] = field(default_factory=list)
    sequence: itertools.count[int] = field(default_factory=itertools.count)
    left: int = 0
    accepted: int = 0
    deferred: list[tuple[int, str]] = field(default_factory=list)
    refused_mail: int = 0
    refused_connections: int = 0
    mail_commands: int = 0
    changes: list[str] = field(default_factory=list)
    stopped: str | None = None
    open: int = 0
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)

    def note(self, change: PaceChange | None) -> None:
        if change is not None:
            line = f"{time.monotonic() - self.started:8.2f}s  {change}"
            self.changes.append(line)
            print(line, file=sys.stderr, flush=True)

    def next_job(self) -> Job | float | None:
        """A due retry, else a new message; a float: seconds until a retry is due."""
        now = time.monotonic()
        if self.retries and self.retries[0][0] <= now:
            return heapq.heappop(self.retries)[2]
        number = next(self.fresh)
        if number <= self.count:
            return Job(number)
        return self.retries[0][0] - now if self.retries else None

    def retry(self, job: Job, delay: float) -> None:
        heapq.heappush(self.retries, (time.monotonic() + delay, next(self.sequence), job))


def message(number: int) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: r{number}@example.com\r\nSubject: paced {number}\r\n"
        f"Message-ID: <paced.{number}@example.org>\r\n\r\nLetter {number}.\r\n"
    ).encode()


async def worker(run: Run, number: int) -> None:
    pacer = run.pacer
    smtp: aiosmtplib.SMTP | None = None
    try:
        while run.left > 0 and run.stopped is None:
            if number >= pacer.connections:
                return  # the pace needs fewer connections now
            why = pacer.stalled()
            if why is not None:
                run.stopped = why
                return
            async with run.gate:  # one connection waits for the pace at a time, in turn
                while not (slot := pacer.reserve()).booked:
                    await asyncio.sleep(slot.wait)
            job = run.next_job()
            if job is None:
                return
            if isinstance(job, float):
                await asyncio.sleep(min(job, 1.0))
                continue
            if smtp is None:
                candidate = aiosmtplib.SMTP(hostname=HOST, port=run.port, start_tls=False)
                try:
                    await candidate.connect()
                except aiosmtplib.SMTPConnectResponseError as err:
                    run.refused_connections += 1
                    run.note(
                        pacer.connection_refused(err.code, err.message, open_connections=run.open)
                    )
                    run.retry(job, 0.0)  # not tried: first in line again
                    if run.open:
                        return
                    continue
                smtp = candidate
                run.open += 1
            address = f"r{job.number}@example.com"
            run.mail_commands += 1
            reply = await smtp.execute_command(b"MAIL", f"FROM:<{SENDER}>".encode())
            if reply.code == 250:
                reply = await smtp.execute_command(b"RCPT", f"TO:<{address}>".encode())
            if reply.code == 250:
                reply = await smtp.execute_command(b"DATA")
                if reply.code == 354:
                    assert smtp.protocol is not None
                    smtp.protocol.write(message(job.number) + b".\r\n")
                    reply = await smtp.protocol.read_response(timeout=60)
            if reply.code == 250:
                run.accepted += 1
                run.left -= 1
                run.note(pacer.accepted(slot))
                continue
            if reply.code >= 500:
                run.deferred.append((job.number, f"{reply.code} {reply.message}"))
                run.left -= 1
                continue
            run.refused_mail += 1
            signal, change = pacer.refused(slot, reply.code, reply.message)
            run.note(change)
            job.tries += 1
            job.first_refused = job.first_refused or time.monotonic()
            delay = pacer.retry_after(signal, job.tries, job.first_refused)
            if delay is None:
                run.deferred.append((job.number, f"{reply.code} {reply.message}"))
                run.left -= 1
            else:
                run.retry(job, delay)
            if reply.code == 421 or not smtp.is_connected:
                smtp.close()  # 421 closes the channel (RFC 5321 3.8)
                smtp, run.open = None, run.open - 1
            else:
                await smtp.execute_command(b"RSET")
    finally:
        if smtp is not None:
            run.open -= 1
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()


async def send(count: int, port: int, concurrency: int, rate: float | None, max_wait: float) -> Run:
    run = Run(Pacer(rate=rate, connections=concurrency, max_wait=max_wait), count, port)
    run.left = count
    tasks: dict[int, asyncio.Task[None]] = {}
    while run.left > 0 and run.stopped is None:
        for number in range(run.pacer.connections):  # (re)open up to what the pace allows
            if number not in tasks or tasks[number].done():
                tasks[number] = asyncio.create_task(worker(run, number))
        await asyncio.sleep(0.05)
        if all(task.done() for task in tasks.values()) and run.next_job() is None:
            break
    await asyncio.gather(*tasks.values())
    for _, _, job in run.retries:
        run.deferred.append((job.number, run.stopped or "not retried"))
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rate", type=float, help="ceiling, messages per minute")
    p.add_argument("--max-wait", type=float, default=1800.0)
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    a = p.parse_args(argv)
    start = time.monotonic()
    run = asyncio.run(send(a.count, a.port, a.concurrency, a.rate, a.max_wait))
    summary = {
        "wall_s": round(time.monotonic() - start, 2),
        "accepted": run.accepted,
        "deferred": len(run.deferred),
        "mail_commands": run.mail_commands,
        "refused_mail": run.refused_mail,
        "refused_connections": run.refused_connections,
        "stopped": run.stopped,
        "pace": run.pacer.pace.describe(),
        "changes": len(run.changes),
    }
    print(json.dumps(summary) if a.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0 if run.accepted == a.count else 1


_ = Signal  # the signals a refusal can carry (see campaign.pacing.classify_reply)

if __name__ == "__main__":
    sys.exit(main())
