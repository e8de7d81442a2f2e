"""Scoring a text stream (stdin): JSON lines or CSV in, one JSON line out per record.

Lines are read with a bound on their length, turned into records (JSON, or
CSV after a header), gathered into micro-batches by a reader thread (stdin
may block) and scored through the :class:`~streammix.scoring.pipeline.Scoring`
it is given; each micro-batch's outputs are written and flushed at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading

from ..exceptions import DataError
from .pipeline import Scoring, json_lines
from .records import MAX_LATENCY_MS, MAX_RECORD_BYTES, MICRO_BATCH, read_lines, text_records


def score_lines(scoring: Scoring, stdin=None, stdout=None, *, fmt="auto",
                batch_size=MICRO_BATCH, max_latency_ms=MAX_LATENCY_MS,
                max_record_bytes=MAX_RECORD_BYTES, **options) -> dict:
    """Score the lines of ``stdin`` (binary; default ``sys.stdin.buffer``) into ``stdout``
    (binary; default ``sys.stdout.buffer``), one JSON line per record in order, and drift
    events where adaptive scoring raises them.

    ``fmt`` is ``"auto"``, ``"jsonl"`` or ``"csv"`` (see
    :func:`~streammix.scoring.records.text_records`); ``options`` are the record
    options (``id_field``, ``max_depth``, ``explain``...). SIGTERM and SIGINT end the
    stream through the scoring's clean stop (its last snapshot), with exit status
    128 + the signal's number. A reader
    that goes away (``| head``) ends it quietly (and returns None). Returns the
    counts: ``records``, ``anomalies``, ``errors`` and ``drift events``.
    """
    stdin = _own_stdin() if stdin is None else stdin
    stdout = sys.stdout.buffer if stdout is None else stdout
    stop = _Stop()
    counts = {"records": 0, "anomalies": 0, "errors": 0, "drift events": 0}
    records = text_records(read_lines(stdin, max_record_bytes), fmt,
                           fields=scoring.feature_names())
    batches = scoring.score_batches(records, batch_size=batch_size,
                                    max_latency_ms=max_latency_ms,
                                    max_record_bytes=max_record_bytes, **options)
    try:
        for batch in batches:
            for out in batch:
                if "event" in out:
                    counts["drift events"] += 1
                else:
                    counts["records"] += 1
                    counts["errors"] += "error" in out
                    counts["anomalies"] += bool(out.get("anomaly"))
            with stop.deferred():  # a micro-batch's lines leave whole
                stdout.write(json_lines(batch))
                stdout.flush()  # each micro-batch leaves at once
    except BrokenPipeError:
        # the reader went away: stop quietly, as command-line tools do
        if stdout is sys.stdout.buffer:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return None
    finally:
        try:
            batches.close()  # the scoring's clean stop, whatever ended the stream
        finally:
            stop.restore()
    return counts


class _Stop:
    """SIGTERM (a supervisor) and SIGINT (Ctrl-C) end the stream through its clean stop,
    with exit status 128 + the signal; one that arrives while a micro-batch is being
    written takes effect once it is written. The previous handlers come back after."""

    def __init__(self):
        self._previous, self._writing, self._pending = {}, False, None
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self._writing:
            self._pending = signum
        else:
            sys.exit(128 + signum)

    @contextlib.contextmanager
    def deferred(self):
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending is not None:
            sys.exit(128 + self._pending)

    def restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _own_stdin():
    """Standard input through a reader of our own (a duplicate of its descriptor): the
    reader thread may be blocked in it when a signal ends the process, and Python aborts
    at exit if that thread holds the lock of ``sys.stdin``'s own buffer. It is never
    closed: that thread may still be blocked in it (one descriptor a stream)."""
    try:
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    except (OSError, ValueError):  # no descriptor (an in-memory stdin, as in tests)
        return sys.stdin.buffer


def read_scored(path) -> list[dict]:
    """The outputs of a scored stream (the JSON lines :func:`score_lines` wrote); a line
    that is not a JSON object is a DataError naming it."""
    outputs = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                out = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise DataError(f"not JSON ({exc})", file=path, row=number) from None
            if not isinstance(out, dict):
                raise DataError("not a JSON object", file=path, row=number)
            outputs.append(out)
    return outputs
