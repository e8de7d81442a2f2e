"""A Redis Streams consumer that scores every entry once and loses none.

Entries are read with a consumer group (created, with the stream, if missing;
from the start of the stream). An entry is a record either as flat fields
(``XADD in * id 7 x0 0.1 x1 2``) or as one field ``data`` holding the record
as JSON. Each micro-batch (at most ``batch`` entries, or what arrived within
``block_ms``) is scored; then one output entry per input entry is added to the
output stream (the scores, or an error entry for a bad record), carrying the
input entry's id in ``entry``; then the input entries are acknowledged.

**Every entry's outputs exactly once, with no state but the streams.** A
consumer that dies leaves its entries pending: on restart it reads its own
pending entries first, and every ``claim_every`` seconds any consumer claims
entries another one left idle for ``claim_idle_ms`` (``XAUTOCLAIM``). An entry
may thus be scored twice, but its outputs are written once: one Lua script
per micro-batch (atomic in Redis) acknowledges each entry and adds its
outputs only when ``XACK`` returns 1 — only the first acknowledgement of a
pending entry does — so an entry another consumer has already answered
writes nothing, and no entry is acknowledged without its outputs. Redis
holds nothing but the two streams: no marker per entry to grow or to be
evicted. The script checks the output key first (a key of another type is
an error before anything is acknowledged) and declares itself a writing
script, so a Redis out of memory refuses it whole rather than midway.
Redis going away and coming back is waited out with backoff.

On Redis Cluster a script's keys must share one hash slot: name both
streams with the same hash tag (``{scores}:in`` and ``{scores}:out``).

With adaptive scoring, a drift event is an entry of the output stream too
(``event drift after_id ... entry ...``), written with the outputs of the
input entry after which it fired, by the same script call.
"""

from __future__ import annotations

import itertools
import operator
import time

import numpy as np
import orjson

from ..exceptions import RecordError, StreammixError
from .pipeline import Scoring, field_texts, output_fields
from .records import ParsedBatch

#: Acknowledges a micro-batch's entries and writes each one's outputs when its
#: acknowledgement is the first. KEYS: input stream, output stream. ARGV: the group,
#: then the batch as one JSON argument (not thousands: packing arguments one by one
#: cost the client half its time), in one of two forms: a table, when every entry has
#: one output with the same fields, {"entries": [id, ...], "keys": [field, ...],
#: "columns": [[value per entry], ...]}; else a list of [entry id, [[field, value, ...]
#: per output]]. Returns how many entries it answered.
_ACK_AND_WRITE = """#!lua
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. kind)
end
local batch = cjson.decode(ARGV[2])
local answered = 0
if batch.keys then
  local fields, columns = {'entry', ''}, batch.columns
  for j, key in ipairs(batch.keys) do fields[2 * j + 1] = key end
  for i, entry in ipairs(batch.entries) do
    if redis.call('XACK', KEYS[1], ARGV[1], entry) == 1 then
      fields[2] = entry
      for j = 1, #columns do fields[2 * j + 2] = columns[j][i] end
      redis.call('XADD', KEYS[2], '*', unpack(fields))
      answered = answered + 1
    end
  end
  return answered
end
for _, item in ipairs(batch) do
  if redis.call('XACK', KEYS[1], ARGV[1], item[1]) == 1 then
    for _, fields in ipairs(item[2]) do
      redis.call('XADD', KEYS[2], '*', unpack(fields))
    end
    answered = answered + 1
  end
end
return answered
"""


class ConsumerGroupError(StreammixError):
    """The consumer group (or its stream) went away while consuming: the consumer stops.
    Creating the group again would deliver every entry of the stream again."""


class OutputStreamError(StreammixError):
    """The output stream cannot be written (a key of another type): nothing was
    acknowledged, and the consumer stops."""


#: Defaults: entries scored at once, how long a read waits for new ones (ms), and how
#: long an entry stays pending at another consumer before it is claimed (ms).
BATCH, BLOCK_MS, CLAIM_IDLE_MS = 256, 100, 30_000


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


#: The field names of the entries seen, decoded once (a producer repeats the same few
#: layouts): (raw names, id field) -> (names, position of the id field or None).
_LAYOUTS: dict = {}


def _layout(keys: tuple, id_field: str):
    layout = _LAYOUTS.get((keys, id_field))
    if layout is None:
        names = tuple(_text(k) for k in keys)
        layout = (names, names.index(id_field) if id_field in names else None)
        if len(_LAYOUTS) < 1000:
            _LAYOUTS[keys, id_field] = layout
    return layout


def entry_record(fields: dict, max_bytes: int, id_field: str = "id"):
    """An entry's record: the JSON text of its ``data`` field (as bytes: the record
    path decodes and checks them), or its flat fields, values that read as numbers
    becoming numbers (the ``id_field`` stays text); an entry over ``max_bytes`` is
    refused."""
    size = sum(map(len, fields)) + sum(map(len, fields.values()))
    if size > max_bytes:
        raise RecordError(f"entry of {size} bytes is longer than the limit of {max_bytes}")
    names, id_at = _layout(tuple(fields), id_field)
    values = list(fields.values())
    if names == ("data",):
        return values[0]
    if id_at is not None:
        record_id, values[id_at] = _text(values[id_at]), 0.0
    try:  # float() reads the bytes' digits itself; one C-level pass over the entry
        record = dict(zip(names, map(float, values), strict=True))
    except ValueError:  # a value that is not a number: kept as text, the scorer names it
        record = {name: _number_or_text(value) for name, value in zip(names, values,
                                                                        strict=True)}
    if id_at is not None:
        record[id_field] = record_id
    return record


def flat_batch(entries, fields, id_field: str, max_bytes: int) -> ParsedBatch | None:
    """A micro-batch of flat entries parsed column-wise, or None to parse entry by entry.

    The common case, every entry holding every feature as a finite number (and
    no entry over ``max_bytes``), is one conversion of all values at once;
    anything else (a ``data`` entry, a missing field, a value that is not a
    finite number, a long entry) gives None, and :func:`entry_record` then
    finds which entry is wrong and why. The outputs are the same either way.
    """
    first = entries[0][1]
    if not first:
        return None
    as_bytes = isinstance(next(iter(first)), bytes)
    keys = [name.encode() for name in fields] if as_bytes else list(fields)
    id_key = id_field.encode() if as_bytes else id_field
    values = operator.itemgetter(*keys) if len(keys) > 1 else lambda f: (f[keys[0]],)
    dicts = [f for _, f in entries]
    try:
        if max(sum(map(len, f)) + sum(map(len, f.values())) for f in dicts) > max_bytes:
            return None
        flat = list(map(float, itertools.chain.from_iterable(map(values, dicts))))
        ids = [_text(f[id_key]) for f in dicts] if id_key in first else None
    except (KeyError, ValueError, TypeError):
        return None
    rows = np.array(flat, dtype=np.float64).reshape(len(dicts), len(keys))
    if (ids is None and any(id_key in f for f in dicts)) or not np.isfinite(rows).all():
        return None
    return ParsedBatch(ids or [None] * len(dicts), rows, list(range(len(dicts))), {})


def _number_or_text(value):
    try:
        return float(value)
    except ValueError:
        return _text(value)


def _script_item(entry_id: str, outputs: list[dict]) -> list:
    """An input entry and its outputs (its record's, then its drift events), as the
    write script takes them."""
    return [entry_id, [["entry", entry_id, *output_fields(out)] for out in outputs]]


def _table(outputs: list[list[dict]]):
    """``(keys, columns of field texts)`` when every entry has one output and all have
    the same keys (the common case, converted column-wise), else None."""
    if any(len(written) != 1 for written in outputs):
        return None
    rows = [written[0] for written in outputs]
    keys = list(rows[0])
    if any(len(row) != len(keys) for row in rows) or any(list(row) != keys for row in rows):
        return None
    try:
        return keys, [field_texts([row[key] for row in rows]) for key in keys]
    except TypeError:  # a value JSON cannot hold: the per-output form says which
        return None


class StreamConsumer:
    """Score the entries of a Redis stream into another (see the module).

    Parameters
    ----------
    scoring : Scoring
        What scores a micro-batch: an AnomalyScorer or AdaptiveScoring.
    client : redis.Redis
    stream, group, consumer, output : str
        Input stream, consumer group, this consumer's name, output stream.
    batch : int
        Most entries read and scored at once.
    block_ms : int
        How long a read waits for entries.
    claim_idle_ms, claim_every : int, float
        Claim entries pending this long at another consumer, every this many seconds.
    max_record_bytes : int
        A larger entry is an error entry.
    snapshot, snapshot_every : str, int
        With adaptive scoring: write its snapshot here after every ``snapshot_every``
        entries, right after their acknowledgement (so it matches an acknowledged
        position: a restart re-reads only entries the snapshot has not learnt).
    """

    def __init__(self, scoring: Scoring, client, stream, group, consumer, output, *,
                 batch=BATCH, block_ms=BLOCK_MS, claim_idle_ms=CLAIM_IDLE_MS, claim_every=5.0,
                 max_record_bytes=1 << 20, id_field="id", snapshot=None,
                 snapshot_every=10_000, explain=True):
        self.scoring, self.client = scoring, client
        self.stream, self.group, self.consumer, self.output = stream, group, consumer, output
        self.batch, self.block_ms = batch, block_ms
        self.claim_idle_ms, self.claim_every = claim_idle_ms, claim_every
        self.max_record_bytes, self.id_field = max_record_bytes, id_field
        self.processed = 0
        self._ack_and_write = None
        self._group_ready = False  # created (if missing) once, at the start only
        self._claimed_at = 0.0
        self.snapshot, self.snapshot_every = snapshot, snapshot_every
        if snapshot is not None and getattr(scoring, "snapshot_path", None) is not None:
            scoring.snapshot_path = None  # written here, after the acknowledgements
        self.explain = explain
        self._snapshot_at = 0

    # -- Redis ------------------------------------------------------------------
    def _ensure_group(self):
        import redis

        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _next_entries(self, backlog: bool, count: int | None = None):
        """Entries to score (at most ``count``, default ``batch``): this consumer's own
        pending ones first (after a restart), then claimed idle ones of other
        consumers, then new ones."""
        count = count or self.batch
        if backlog:
            read = self.client.xreadgroup(self.group, self.consumer, {self.stream: "0"},
                                          count=count)
            entries = read[0][1] if read else []
            if entries:
                return entries, True
        if time.monotonic() - self._claimed_at >= self.claim_every:
            self._claimed_at = time.monotonic()
            claimed = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                             self.claim_idle_ms, "0-0", count=count)
            entries = [e for e in claimed[1] if e[1] is not None]
            if entries:
                return entries, False
        read = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                      count=count, block=self.block_ms)
        return (read[0][1] if read else []), False

    def _encode(self, entries, outputs) -> bytes:
        """The write script's batch argument: each entry with its outputs (one list of
        outputs per entry); column by column when they all have one of the same form."""
        entry_ids = [_text(entry_id) for entry_id, _ in entries]
        table = _table(outputs)
        if table is not None:
            keys, columns = table
            return orjson.dumps({"entries": entry_ids, "keys": keys, "columns": columns})
        return orjson.dumps([_script_item(entry_id, written) for entry_id, written
                             in zip(entry_ids, outputs, strict=True)])

    def _write(self, entries, outputs) -> int:
        """Acknowledge the entries and write the outputs of those this acknowledgement
        answers first, in one script call. ``outputs``: one list per entry."""
        return self._send(self._encode(entries, outputs))

    def _send(self, batch: bytes) -> int:
        import redis

        if self._ack_and_write is None:
            self._ack_and_write = self.client.register_script(_ACK_AND_WRITE)
        try:
            return self._ack_and_write(keys=[self.stream, self.output], args=[self.group, batch])
        except redis.ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                kind = str(exc).split("WRONGTYPE")[-1].strip()
                raise OutputStreamError(f"the output key {self.output!r} holds a {kind}, not a "
                                        "stream: nothing was acknowledged; remove it or name "
                                        "another output") from None
            raise

    # -- the loop ---------------------------------------------------------------
    def _score(self, entries) -> list[list[dict]]:
        """Per input entry: its output, then the drift events that fired at it."""
        records = flat_batch(entries, self.scoring.feature_names(), self.id_field,
                             self.max_record_bytes) or self._records(entries)
        per_entry = []
        for out in self.scoring.score_batch(records, id_field=self.id_field,
                                            explain=self.explain):
            if "event" in out:
                per_entry[-1].append(out)
            else:
                per_entry.append([out])
        return per_entry

    def _records(self, entries) -> list:
        """The entries' records one by one (an entry that cannot be one: its error)."""
        records = []
        for entry_id, fields in entries:
            try:
                records.append(entry_record(fields, self.max_record_bytes, self.id_field))
            except RecordError as exc:
                key = self.id_field
                exc.record_id = _text(fields.get(key.encode(), fields.get(key, entry_id)))
                records.append(exc)
        return records

    def run(self, *, stop=None, max_entries=None, reconnect_seconds=30.0):
        """Consume until ``stop()`` is true or ``max_entries`` were handled; Redis going
        away is waited out (backoff up to 2 s a try, ``reconnect_seconds`` in all).

        Redis's work and ours overlap: while a micro-batch is scored here, the
        previous one is written (acknowledged and answered) and the next one read,
        each on a thread of its own (they wait on the network; scoring holds the
        GIL). With a snapshot, each write is waited for, so a snapshot follows the
        acknowledgements of exactly the entries it has learnt (an entry read ahead
        is pending, not learnt: a restart reads it again). A stop answers the
        batch read ahead too, so a clean stop leaves nothing pending.
        """
        import redis

        def more():
            return not (stop and stop()) and (max_entries is None or
                                              self.processed < max_entries)

        backlog, delay, down_since = True, 0.1, None
        writes = _Background("streammix-redis-write")  # the network only: encoding holds
        ahead = _Background("streammix-redis-read")  # the GIL, so it stays here
        try:
            while ahead.pending or more():
                try:
                    if backlog or down_since is not None:
                        writes.wait()  # what is pending is read again: none in flight
                    if not self._group_ready:
                        # once: a group that goes away later is not made again (from the
                        # stream's start it would deliver every entry a second time)
                        self._ensure_group()
                        self._group_ready = True
                    entries, backlog = ahead.wait() if ahead.pending else \
                        self._next_entries(backlog)
                    down_since, delay = None, 0.1
                    if not entries:
                        writes.wait()
                        continue
                    self.processed += len(entries)
                    if not backlog and more():  # own pending entries are read in order
                        ahead.submit(self._next_entries, False, None if max_entries is None
                                     else min(self.batch, max_entries - self.processed))
                    writes.submit(self._send, self._encode(entries, self._score(entries)))
                    if self.snapshot:
                        writes.wait()
                        if self.processed - self._snapshot_at >= self.snapshot_every:
                            self.scoring.save_snapshot(self.snapshot)  # after the acks
                            self._snapshot_at = self.processed
                except redis.ResponseError as exc:
                    # NOGROUP: read without the group; UNBLOCKED: removed while waiting
                    if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                        raise
                    writes.forget()
                    ahead.forget()
                    raise ConsumerGroupError(
                        f"the consumer group {self.group!r} of stream {self.stream!r} no "
                        "longer exists (XGROUP DESTROY, or the stream deleted): stopped; "
                        "entries acknowledged so far have their outputs. A group created "
                        "again starts from the stream's first entry") from None
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    writes.forget()  # its entries stay pending: read again below
                    ahead.forget()
                    now = time.monotonic()
                    down_since = down_since or now
                    if now - down_since > reconnect_seconds:
                        raise
                    time.sleep(delay)
                    delay, backlog = min(2.0, delay * 2), True  # re-read what is pending
            writes.wait()
        finally:
            ahead.forget()
            writes.forget()
            ahead.close()
            writes.close()
        if self.snapshot and self.processed > self._snapshot_at:  # a clean stop: all acked
            self.scoring.save_snapshot(self.snapshot)
            self._snapshot_at = self.processed
        return self.processed


class _Background:
    """One call at a time on a thread of its own, while the caller goes on; its result
    (or error) comes from :meth:`wait`, and the next :meth:`submit` waits for it first."""

    def __init__(self, name: str):
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(1, name)
        self._pending = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def submit(self, call, *args):
        self.wait()
        self._pending = self._pool.submit(call, *args)

    def wait(self):
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def forget(self):
        """After a failure elsewhere: let the call finish, and drop its outcome (a read's
        entries and a failed write's stay pending in Redis, to be read again)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()

    def close(self):
        self._pool.shutdown(wait=True)


def consume(scoring: Scoring, url, stream, group, output, *, consumer=None, **options):
    """Run a :class:`StreamConsumer` on the Redis server at ``url`` until stopped.

    ``consumer`` defaults to ``HOST-PID``; ``options`` are the consumer's.
    SIGTERM and SIGINT stop it cleanly: the micro-batch in hand is written and
    acknowledged, then the adaptive snapshot (if any) is written. Returns the
    number of entries handled.
    """
    import os
    import signal
    import socket
    import threading

    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=10)
    except ValueError as exc:
        raise ValueError(f"--redis {url!r}: {exc}") from None
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    stopping, previous = threading.Event(), {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stopping.set())
    try:
        return StreamConsumer(scoring, client, stream, group, consumer, output,
                              **options).run(stop=stopping.is_set)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
