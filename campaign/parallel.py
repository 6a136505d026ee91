"""Two pieces of work at once in two processes, for reads that would otherwise take turns."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


def side_by_side(elsewhere: Callable[[], T], here: Callable[[], U]) -> tuple[T, U]:
    """Run `elsewhere` in a worker process while `here` runs in this one; both results.

    Both must be picklable (top-level functions, `functools.partial` of them) and so must
    what `elsewhere` returns: it crosses back from the worker.
    """
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(elsewhere)
        mine = here()
        return future.result(), mine
