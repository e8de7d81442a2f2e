"""Records arriving one by one: decoding, parsing with per-record errors, micro-batching.

The edge of every transport (stdin, HTTP, Redis): a stream gives one output
per input record, in order. A record that cannot be used (not UTF-8, not
JSON, too long or too deep, a missing field, a non-numeric value, NaN, an id
JSON cannot carry back) becomes a :class:`~streammix.exceptions.RecordError`
in its place, and the stream goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import orjson

from ..exceptions import RecordError

__all__ = ["MAX_DEPTH", "MAX_LATENCY_MS", "MAX_RECORD_BYTES", "MICRO_BATCH", "ParsedBatch",
           "RecordError", "decode_body", "decode_json", "micro_batches", "parse_batch",
           "parse_record", "read_lines", "split_ndjson", "text_records"]

_END = object()


#: Default limits of one record: its size in bytes, and how deeply its JSON may nest.
MAX_RECORD_BYTES = 1 << 20
MAX_DEPTH = 32
#: Default micro-batches of a stream: at most this many records, handed on this many
#: milliseconds after the first arrived.
MICRO_BATCH, MAX_LATENCY_MS = 256, 10.0

def _deeper_than(value, limit: int) -> bool:
    """Whether a decoded JSON value nests deeper than ``limit`` levels: a walk over its
    containers, level by level (linear in their number, and no recursion)."""
    level, depth = [value], 0
    while containers := [node for node in level if isinstance(node, dict | list)]:
        depth += 1
        if depth > limit:
            return True
        level = [item for node in containers
                 for item in (node.values() if isinstance(node, dict) else node)]
    return False


def _decode(record, max_bytes: int) -> str:
    if len(record) > max_bytes:
        raise RecordError(f"record of {len(record)} bytes is longer than the limit of "
                          f"{max_bytes} (--max-record-bytes)")
    if isinstance(record, bytes):
        try:
            return record.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"not UTF-8 text (byte {exc.start})") from None
    return record


def decode_json(text: str, max_depth: int = MAX_DEPTH):
    """The JSON value of one record's ``text``; a RecordError if it is not JSON or nests
    deeper than ``max_depth`` (every transport decodes its records through this).

    Decoding comes first and is safe at any depth (orjson stops at 1024 levels, and
    Python's decoder with a RecursionError); the depth of what was decoded is then
    measured, in time linear in its size, only when its brackets could reach it.
    """
    value = _loads(text, max_depth)
    if text.count("[") + text.count("{") > max_depth and _deeper_than(value, max_depth):
        raise RecordError(f"JSON nested deeper than {max_depth} levels (--max-depth)")
    return value


def decode_body(text: str, max_depth: int = MAX_DEPTH):
    """The JSON value of a request body holding many records; a RecordError if it is
    not JSON. Its records are checked field by field, so its depth is not measured
    (orjson bounds it at 1024 levels)."""
    return _loads(text, max_depth)


def _loads(text: str, max_depth: int):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        strict = exc
    # orjson refuses valid JSON that holds a lone surrogate or a number beyond the float
    # range; Python's decoder takes it, so a body with one such record among many is
    # decoded, and that record alone is an error record (its id or value is checked)
    try:
        return json.loads(text)
    except RecursionError:
        raise RecordError(f"JSON nested deeper than {max_depth} levels (--max-depth)") \
            from None
    except ValueError:
        raise RecordError(f"not JSON ({strict.msg} at column {strict.colno})") from None


def _record_id(record: dict, id_field):
    """The record's id, when it is one every output can carry back: a string of
    Unicode text (no lone surrogate: UTF-8 cannot hold it), a bool, an integer
    of 64 bits (signed or unsigned, what JSON libraries carry) or a finite float."""
    value = record.get(id_field)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.isascii() or _encodable(value):
            return value
        raise RecordError(f"field {id_field!r} holds a lone surrogate (not Unicode text)")
    if isinstance(value, int):
        if -(1 << 63) <= value < 1 << 64:
            return value
        raise RecordError(f"field {id_field!r} is an integer beyond 64 bits")
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise RecordError(f"field {id_field!r} must be a string or a finite number")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_record(record, fields, id_field, *, max_bytes=MAX_RECORD_BYTES, max_depth=MAX_DEPTH):
    """``(id, row)`` from a dict, a sequence, or a JSON text; raises RecordError.

    A dict needs every name of ``fields``; a sequence needs ``len(fields)``
    values in that order. Values must be finite numbers (numeric strings are
    accepted, as CSV gives them). A text record longer than ``max_bytes`` or
    nested deeper than ``max_depth`` is an error, whatever its content.
    """
    record_id, values = _values(record, fields, id_field, max_bytes, max_depth)
    return record_id, _row(record_id, values, fields)


@dataclasses.dataclass
class ParsedBatch:
    """A micro-batch parsed: every record's id (None when it has none), the rows of the
    good records in order, their positions among the records, and ``{position:
    message}`` for the others. A transport that can parse its records faster itself
    (Redis's flat entries, column-wise) hands this to the pipeline in their place."""

    ids: list
    rows: np.ndarray
    positions: list[int]
    errors: dict[int, str]

    def __len__(self) -> int:
        return len(self.ids)


def parse_batch(records: Sequence, fields, id_field, *, max_bytes=MAX_RECORD_BYTES,
                max_depth=MAX_DEPTH) -> ParsedBatch:
    """:func:`parse_record` of a whole micro-batch, the values converted column-wise.

    A record that is already a :class:`RecordError` (a transport's) stays one;
    a :class:`ParsedBatch` is returned as it is.
    """
    if isinstance(records, ParsedBatch):
        return records
    ids, raw, positions, errors = [None] * len(records), [], [], {}
    for position, record in enumerate(records):
        try:
            if isinstance(record, RecordError):
                raise record
            ids[position], values = _values(record, fields, id_field, max_bytes, max_depth)
        except RecordError as exc:
            ids[position], errors[position] = exc.record_id, str(exc)
            continue
        positions.append(position)
        raw.append(values)
    rows = _plain_rows(raw, len(fields))
    if rows is None:  # some value is not a plain finite number: one by one, to say which
        converted, kept = [], []
        for position, values in zip(positions, raw, strict=True):
            try:
                converted.append(_row(ids[position], values, fields))
                kept.append(position)
            except RecordError as exc:
                errors[position] = str(exc)
        rows = np.array(converted, dtype=np.float64).reshape(len(kept), len(fields))
        positions = kept
    return ParsedBatch(ids, rows, positions, errors)


#: Value types converted in bulk (bool, a subclass of int, is not one: it is refused).
_PLAIN = frozenset({float, int, np.float64})


def _plain_rows(raw: list, n_fields: int) -> np.ndarray | None:
    """The values as rows in one conversion when every one is a plain finite number,
    else None."""
    if not raw:
        return np.empty((0, n_fields))
    if not set(map(type, itertools.chain.from_iterable(raw))) <= _PLAIN:
        return None
    try:
        rows = np.array(raw, dtype=np.float64)
    except OverflowError:  # an integer beyond the float range
        return None
    return rows if np.isfinite(rows).all() else None


def _values(record, fields, id_field, max_bytes, max_depth):
    """``(id, values)`` of one record, the values as given (not yet numbers)."""
    if isinstance(record, bytes | str):
        record = decode_json(_decode(record, max_bytes), max_depth)
    if isinstance(record, dict):
        record_id = _record_id(record, id_field)
        try:
            return record_id, [record[f] for f in fields]
        except KeyError:
            missing = next(f for f in fields if f not in record)
            raise RecordError(f"missing field {missing!r}", record_id) from None
    if isinstance(record, list | tuple | np.ndarray):
        if len(record) != len(fields):
            raise RecordError(f"expected {len(fields)} values, got {len(record)}")
        return None, list(record)
    raise RecordError(f"a record must be an object or an array, got {type(record).__name__}")


def _row(record_id, values, fields) -> np.ndarray:
    """The values as finite floats; a RecordError naming the first that is not one."""
    row = np.empty(len(fields))
    for j, (name, value) in enumerate(zip(fields, values, strict=True)):
        try:
            if isinstance(value, bool) or value is None:
                raise TypeError
            row[j] = float(value)
        except (TypeError, ValueError, OverflowError):
            raise RecordError(f"field {name!r} is not numeric: {_brief(value)}",
                              record_id) from None
        if not math.isfinite(row[j]):
            raise RecordError(f"field {name!r} is not finite: {_brief(value)}", record_id)
    return row


def _brief(value) -> str:
    """A value for a message: at most 60 characters (it may be a 400-digit integer)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def split_ndjson(text: str) -> list[str]:
    """The non-blank lines of an NDJSON text, split on ``\\n`` only: U+2028, U+2029 and
    U+0085 are legal inside JSON strings, and ``str.splitlines`` would split there."""
    return [line for line in text.split("\n") if line.strip()]


def read_lines(stream, max_bytes: int = MAX_RECORD_BYTES) -> Iterator:
    """Lines of a binary stream as bytes, never holding more than ``max_bytes`` of one line.

    A longer line yields a :class:`RecordError` in its place (the rest of it is
    read and dropped), so one huge line costs no memory and loses no neighbour.
    """
    while line := stream.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line
            continue
        size = len(line)
        while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
            size += len(rest)
        yield RecordError(f"record of over {max_bytes} bytes is longer than the limit "
                          f"(--max-record-bytes); {size + len(rest)} bytes dropped")


def text_records(lines: Iterable, fmt: str = "auto", fields=None) -> Iterator:
    """Records from lines (str or bytes) of JSON, or CSV with a header row.

    Blank lines are skipped; every other line is one record (or the CSV
    header), so every record gets one output. ``fmt="auto"`` decides line by
    line: a line starting with ``{`` or ``[`` is JSON; any other line is the
    CSV header if none was seen yet (one naming every name of ``fields``, when
    given) and a CSV row after it. A line that is neither (junk before any
    header) becomes an error record: it never changes how later lines are read.
    """
    header = None
    for line in lines:
        if isinstance(line, RecordError):
            yield line
            continue
        try:
            text = _decode(line, float("inf"))
        except RecordError as exc:
            yield exc
            continue
        if not text.strip():
            continue
        if fmt == "jsonl" or (fmt == "auto" and text.lstrip()[:1] in ("{", "[")):
            yield text
            continue
        try:
            values = next(csv.reader([text]))
        except csv.Error as exc:
            yield RecordError(f"not a CSV line ({exc})")
            continue
        if header is None:
            if fmt == "csv" or fields is None or set(fields) <= set(values):
                header = values
            else:
                yield RecordError("neither a JSON record nor a CSV header naming the fields "
                                  f"{list(fields)}")
            continue
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
