"""Work spread over the machine's cores by forked processes: a worker reads the build's state
as it was at the fork (copy on write, so nothing large is sent to it) and sends its result
back. Where processes cannot be forked, or there is one core, the work runs here in order."""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_TASK: Callable[[Any], Any] | None = None  # what a forked worker applies to its items


def cores() -> int:
    """The processes `forked` spreads work over: the cores this process may run on, where
    processes can be forked (else 1)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def forked(task: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """`task(item)` for each item, in order, over min(`cores()`, items) forked processes. The
    task may be a closure: workers inherit it at the fork, only items and results are sent."""
    global _TASK
    count = min(cores(), len(items))
    if count <= 1:
        yield from (task(item) for item in items)
        return
    _TASK = task
    try:
        with multiprocessing.get_context("fork").Pool(count) as pool:
            yield from pool.imap(_apply, items)
    finally:
        _TASK = None


def _apply(item: Any) -> Any:
    assert _TASK is not None, "forked sets the task before the workers fork"
    return _TASK(item)
