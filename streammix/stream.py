"""Records arriving one by one: parsing with per-record errors, and micro-batching.

A stream gives one output per input record, in order. A record that cannot be
used (not JSON, a missing field, a non-numeric value, NaN) becomes an error
record in its place, and the stream goes on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator

import numpy as np

_END = object()


class RecordError(ValueError):
    """One record cannot be scored; says why (and its id, when it has one)."""

    def __init__(self, message, record_id=None):
        super().__init__(message)
        self.record_id = record_id


def parse_record(record, fields, id_field):
    """``(id, row)`` from a dict, a sequence, or a JSON text; raises RecordError.

    A dict needs every name of ``fields``; a sequence needs ``len(fields)``
    values in that order. Values must be finite numbers (numeric strings are
    accepted, as CSV gives them).
    """
    if isinstance(record, bytes):
        record = record.decode("utf-8", errors="replace")
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except json.JSONDecodeError as exc:
            raise RecordError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(record, dict):
        record_id = record.get(id_field)
        missing = [f for f in fields if f not in record]
        if missing:
            raise RecordError(f"missing field {missing[0]!r}", record_id)
        values = [record[f] for f in fields]
    elif isinstance(record, list | tuple | np.ndarray):
        record_id = None
        if len(record) != len(fields):
            raise RecordError(f"expected {len(fields)} values, got {len(record)}")
        values = list(record)
    else:
        raise RecordError(f"a record must be an object or an array, got {type(record).__name__}")
    row = np.empty(len(fields))
    for j, (name, value) in enumerate(zip(fields, values, strict=True)):
        try:
            if isinstance(value, bool) or value is None:
                raise TypeError
            row[j] = float(value)
        except (TypeError, ValueError):
            raise RecordError(f"field {name!r} is not numeric: {value!r}", record_id) from None
        if not math.isfinite(row[j]):
            raise RecordError(f"field {name!r} is not finite: {value!r}", record_id)
    return record_id, row


def text_records(lines: Iterable[str], fmt: str = "auto") -> Iterator:
    """Records from lines of JSON (one object per line) or CSV with a header row.

    ``fmt="auto"`` decides from the first non-empty line: ``{`` or ``[`` means
    JSON lines. Blank lines are skipped. A CSV row becomes a dict by the header.
    """
    lines = iter(lines)
    first = None
    for line in lines:
        if line.strip():
            first = line
            break
    if first is None:
        return
    if fmt == "auto":
        fmt = "jsonl" if first.lstrip()[:1] in "{[" else "csv"
    if fmt == "jsonl":
        yield first
        yield from (line for line in lines if line.strip())
        return
    header = next(csv.reader([first]))
    for line in lines:
        if not line.strip():
            continue
        values = next(csv.reader(io.StringIO(line)))
        if len(values) != len(header):
            yield RecordError(f"expected {len(header)} CSV values, got {len(values)}")
            continue
        yield dict(zip(header, values, strict=True))


def micro_batches(items: Iterable, batch_size: int, max_latency: float) -> Iterator[list]:
    """Group ``items`` into lists of at most ``batch_size``.

    A batch is handed on as soon as it is full or ``max_latency`` seconds after
    its first item arrived, so a slow trickle is processed as it comes. A
    reader thread pulls from ``items``, which may block (stdin).
    """
    pending: queue.Queue = queue.Queue(maxsize=4 * batch_size)

    def reader():
        try:
            for item in items:
                pending.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            pending.put(_Failure(exc))
        pending.put(_END)

    threading.Thread(target=reader, daemon=True, name="streammix-reader").start()
    while True:
        item = pending.get()
        if item is _END:
            return
        batch, deadline = [item], time.monotonic() + max_latency
        while len(batch) < batch_size:
            wait = deadline - time.monotonic()
            try:
                item = pending.get(timeout=max(wait, 0)) if wait > 0 else pending.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                yield _checked(batch)
                return
            batch.append(item)
        yield _checked(batch)


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def _checked(batch):
    for item in batch:
        if isinstance(item, _Failure):
            raise item.exc
    return batch
