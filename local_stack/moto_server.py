"""moto's server, with three costs that are quadratic in moto 5 made linear, and
DynamoDB's conditional writes made atomic.

- Kinesis: a shard's newest sequence number is found by listing every key on each
  put, and get_records scans the whole shard, so loading 100k events stalls for
  minutes. Sequence numbers in a moto shard are consecutive integers, so both index
  the shard directly.
- DynamoDB: setting one attribute re-measures the whole item (to enforce the 400 KB
  limit), so an UpdateItem adding n attributes to a wide item costs n x its size. The
  size is kept as a running total instead; the limit is enforced as before.
- Every request lists moto's package folder (and stats each entry) to route it; the
  list is read once instead.
- DynamoDB: moto checks a write's condition and then writes, with nothing between
  concurrent requests (the server handles each in its own thread), so two writers of
  one version could both pass an optimistic-locking check and one update be lost. In
  DynamoDB a conditional write is atomic; one lock around each write makes moto's so.
Otherwise behaviour is unchanged; only the cost is. werkzeug's per-request log is silenced.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

from moto import backends, server
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, ItemSizeTooLarge, LimitedSizeDict, bytesize
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


def _size_of(key: str, value) -> int:
    return bytesize(key) + (value.size() if type(value) is DynamoType else bytesize(str(value)))


def _set_attribute(self: LimitedSizeDict, key: str, value) -> None:
    size = self.__dict__.get("_size")
    if size is None:
        size = sum(_size_of(k, v) for k, v in self.items())
    if key in self:
        size -= _size_of(key, dict.__getitem__(self, key))
    size += _size_of(key, value)
    if size > 405000:  # moto's own threshold for DynamoDB's 400 KB item limit
        raise ItemSizeTooLarge
    dict.__setitem__(self, key, value)
    self.__dict__["_size"] = size


def _forgetting_size(method):
    def wrapper(self, *args, **kwargs):
        self.__dict__.pop("_size", None)
        return method(self, *args, **kwargs)
    return wrapper


_MOTO_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MOTO_MODULES
LimitedSizeDict.__setitem__ = _set_attribute
for _name in ("__delitem__", "pop", "popitem", "update", "clear", "setdefault"):
    setattr(LimitedSizeDict, _name, _forgetting_size(getattr(dict, _name)))

Shard.get_max_sequence_number = _max_sequence_number
Shard.get_min_sequence_number = _min_sequence_number
Shard.get_records = _get_records

_WRITE_LOCK = threading.RLock()


def _atomic(method):
    def wrapper(*args, **kwargs):
        with _WRITE_LOCK:
            return method(*args, **kwargs)
    return wrapper


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _atomic(getattr(DynamoDBBackend, _name)))


def _exit_with_parent() -> None:
    """The stack stops the server; if the stack dies without doing so, the server goes too."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _exit_with_parent()
    sys.exit(server.main(sys.argv[1:]))
