"""Progress bars for the build job's long loops (tqdm, on stderr).

On a terminal the bar redraws twice a second; in a log (CI, a SageMaker or Batch job) it
writes a line at most every 30 s, so a long stage still shows it is moving.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], stage: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    interactive = sys.stderr.isatty()
    return iter(tqdm(items, desc=stage, total=total, unit=unit, file=sys.stderr, leave=True,
                     mininterval=0.5 if interactive else 30.0, dynamic_ncols=interactive))
