"""The pacing rule against simulated providers: the issue's targets, in simulated time.

A run of N messages through `tests/pacing_sim.py` (a fake clock, no sockets) for each
provider model: within 1.25x of the ideal N / rate, nothing failed or sent twice, at most
10% of MAIL commands refused, never more connections than the ceiling.
`python tests/pacing_sim.py` prints the sweep as a table.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pacing_sim import FixedWindow, Provider, SlidingWindow, TokenBucket, simulate

GMAIL = (421, "4.7.28 Gmail has detected an unusual rate of unsolicited mail - gsmtp")

MODELS: dict[str, tuple[Callable[[], Provider], int]] = {
    "bucket 600/min burst 20, 2 conn": (lambda: TokenBucket(600, 20, 2), 2000),
    "bucket 200/min burst 5, 1 conn": (lambda: TokenBucket(200, 5, 1), 2000),
    "bucket 3000/min burst 50, 4 conn": (lambda: TokenBucket(3000, 50, 4), 2000),
    "bucket 30/min burst 1, 3 conn": (lambda: TokenBucket(30, 1, 3), 500),
    "bucket 400/min burst 10, 3 conn, 421 at MAIL": (
        lambda: TokenBucket(400, 10, 3, mail_reply=GMAIL),
        2000,
    ),
    "Postfix anvil 10/60 s, 2 conn": (lambda: FixedWindow(10, 60, 2), 200),
    "Postfix anvil 100/60 s, 2 conn": (lambda: FixedWindow(100, 60, 2), 2000),
    "sliding window 50/60 s, 3 conn": (lambda: SlidingWindow(50, 60, 3), 1000),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_default_run_meets_the_targets(name: str) -> None:
    make, n = MODELS[name]
    provider: Provider = make()
    result = simulate(provider, n, concurrency=4)
    assert result.delivered == n and result.failed == 0 and result.duplicates == 0
    assert result.ratio <= 1.25, result.changes[:20]
    assert result.refused_share <= 0.10, result.changes[:20]
    assert result.max_connections <= 4


def test_run_with_latency_meets_the_targets() -> None:
    result = simulate(TokenBucket(600, 20, 2), 2000, rtt=0.025)
    assert result.delivered == 2000 and result.ratio <= 1.25 and result.refused_share <= 0.10


def test_rate_ceiling_below_the_provider_is_never_refused_nor_exceeded() -> None:
    result = simulate(TokenBucket(600, 20, 2), 1000, rate=300)
    assert result.refused_mail == 0 and result.delivered == 1000
    assert result.max_rate_per_min <= 300
    assert result.wall_s <= 1000 / 300 * 60 * 1.02


def test_rate_ceiling_above_the_provider_still_finds_its_pace() -> None:
    result = simulate(TokenBucket(600, 20, 2), 2000, rate=900)
    assert result.delivered == 2000 and result.ratio <= 1.25 and result.refused_share <= 0.10
    assert result.max_rate_per_min <= 900


def test_run_gives_up_after_max_wait_and_defers_the_rest() -> None:
    closed_for_an_hour = FixedWindow(10, 3600, 2)
    result = simulate(closed_for_an_hour, 50, max_wait=600)
    assert result.delivered == 10 and result.failed == 40 and result.duplicates == 0
    assert 600 <= result.wall_s <= 700
    assert result.refused_mail < 30  # it waited longer and longer between tries
    assert result.stopped is not None and result.stopped.startswith("nothing accepted for 10 min")


def test_pace_changes_are_reported() -> None:
    result = simulate(FixedWindow(10, 60, 2), 40)
    assert any(c.split("s ", 1)[1].startswith("slowed to") for c in result.changes)
    assert any("fewer connections" in c for c in result.changes)
