"""moto's server, with Kinesis shard reads and writes made O(1) per record.

moto 5 finds a shard's newest sequence number by listing every key on each put, and
scans the whole shard on each get_records, so loading 100k events is quadratic (it
stalls for minutes). Sequence numbers in a moto shard are consecutive integers, so
both can index the shard directly. Behaviour is unchanged; only the cost is.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from moto import server
from moto.kinesis.models import Shard


def _max_sequence_number(self: Shard) -> int:
    return next(reversed(self.records)) if self.records else 0


def _min_sequence_number(self: Shard) -> int:
    return next(iter(self.records)) if self.records else 0


def _get_records(self: Shard, last_sequence_id: str, limit: int | None):
    last = int(last_sequence_id)
    results = []
    if self.records:
        newest = _max_sequence_number(self)
        sequence = max(last + 1, _min_sequence_number(self))
        while sequence <= newest and (limit is None or len(results) < limit):
            record = self.records.get(sequence)
            if record is not None:
                results.append(record)
            sequence += 1
    if not results:
        return results, last, 0
    behind = self.records[_max_sequence_number(self)].created_at - results[-1].created_at
    return results, results[-1].sequence_number, int(behind * 1000)


Shard.get_max_sequence_number = _max_sequence_number
Shard.get_min_sequence_number = _min_sequence_number
Shard.get_records = _get_records



def _exit_with_parent() -> None:
    """The stack stops the server; if the stack dies without doing so, the server goes too."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    _exit_with_parent()
    sys.exit(server.main(sys.argv[1:]))
