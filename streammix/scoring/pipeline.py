"""The one path from records to outputs: parse, score, flag, explain, encode.

Every transport (stdin, HTTP, Redis, a Python iterable) goes through
:func:`score_batch`: the records of one micro-batch are parsed (a bad one
becomes an error output in its place), the good rows are scored together in
NumPy, flagged by the one threshold rule, explained, and merged back in input
order. The model-specific part (which score, which explanation) comes from a
:class:`Kernel`; everything here is model-agnostic.

A transport holds a :class:`Scoring`: an :class:`~streammix.AnomalyScorer` or
its adaptive form, :class:`~streammix.scoring.adaptive.AdaptiveScoring`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import orjson

from ..engine import one_blas_thread
from ..exceptions import NotFittedError
from .records import MAX_DEPTH, MAX_RECORD_BYTES, parse_batch

__all__ = ["NO_THRESHOLD", "Kernel", "RecordOptions", "ScoredBatch", "Scoring", "flag",
           "field_text", "field_texts", "json_array", "json_bytes", "json_line", "json_lines",
           "output_fields", "require_threshold", "score_batch"]

#: The one message for a scorer without a threshold, whatever the transport.
NO_THRESHOLD = ("the model has no threshold yet: calibrate it on training data "
                "(AnomalyScorer.fit; streammix calibrate, or fit --contamination), or give a "
                "threshold (threshold=; --threshold)")

#: Features named in an explanation, by default.
TOP_FEATURES = 3

_LARGEST = np.finfo(np.float64).max


def require_threshold(scorer) -> float:
    """The scorer's threshold (``offset_``), or :class:`~streammix.NotFittedError` saying
    how to get one: the one threshold rule of every command and transport."""
    try:
        return float(scorer.offset_)
    except AttributeError:
        raise NotFittedError(NO_THRESHOLD) from None


def flag(scores, offset):
    """Which scores are anomalies. Fails closed: anything not clearly at or above the
    threshold (NaN included) is one. Works on NumPy and Dask arrays alike."""
    return ~(scores >= offset)


def finite(values: np.ndarray) -> np.ndarray:
    """``values`` for JSON: infinities become the largest finite floats (a score of -inf,
    a row far beyond the model, is the lowest score a JSON number can hold)."""
    return np.clip(values, -_LARGEST, _LARGEST)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """The model-specific part of scoring, as module-level functions (they may run on
    Dask workers): ``score(params, X, start)``, ``labels(params, X, start)`` and
    ``explain(params, X) -> (component, probability, distance, contributions)``."""

    score: Callable
    labels: Callable
    explain: Callable
    params: object

    def scores(self, X: np.ndarray) -> np.ndarray:
        return self.score(self.params, X, 0)


@dataclasses.dataclass(frozen=True)
class RecordOptions:
    """How records are read and answered: which field is the id, which are the features
    (default the model's), the size and nesting limits of a text record, and whether
    outputs carry the explanation."""

    id_field: str = "id"
    fields: tuple | None = None
    max_record_bytes: int = MAX_RECORD_BYTES
    max_depth: int = MAX_DEPTH
    explain: bool = True

    @classmethod
    def of(cls, options: dict) -> RecordOptions:
        """From keyword options (``fields`` any sequence)."""
        if options.get("fields") is not None:
            options = {**options, "fields": tuple(options["fields"])}
        return cls(**options)


@dataclasses.dataclass
class ScoredBatch:
    """One micro-batch: an output per record in order, the rows that were scored, and
    their places among the outputs (the other outputs are error records)."""

    outputs: list[dict]
    rows: np.ndarray
    positions: list[int]


def explained(kernel: Kernel, X: np.ndarray, offset: float, names: Sequence[str],
              top_features: int, explain: bool = True, ids=None) -> list[dict]:
    """The output of each row of ``X``: its ``id`` (with ``ids``), ``score`` and
    ``anomaly``, and with ``explain`` its ``cluster``, ``probability``, ``distance``
    and ``top_features`` (the names of the features that take it furthest from its
    cluster), built column-wise."""
    with one_blas_thread:
        return _explained(kernel, X, offset, names, top_features, explain, ids)


def _explained(kernel, X, offset, names, top_features, explain, ids) -> list[dict]:
    scores = kernel.scores(X)
    columns = {} if ids is None else {"id": ids}
    columns.update(score=finite(scores).tolist(), anomaly=flag(scores, offset).tolist())
    if explain:
        component, probability, distance, contributions = kernel.explain(kernel.params, X)
        top = np.argsort(-contributions, axis=1, kind="stable")[:, :top_features]
        columns["cluster"] = component.astype(np.int64).tolist()
        columns["probability"] = [None if p != p else p for p in probability.tolist()]
        columns["distance"] = finite(distance).tolist()
        columns["top_features"] = np.asarray(names, dtype=object)[top].tolist()
    keys = list(columns)
    return [dict(zip(keys, values, strict=True))
            for values in zip(*columns.values(), strict=True)]


def score_batch(kernel: Kernel, offset: float, records: Sequence, names: Sequence[str],
                top_features: int, options: RecordOptions) -> ScoredBatch:
    """Score one micro-batch of records, in this thread: see the module."""
    fields = list(options.fields) if options.fields is not None else list(names)
    parsed = parse_batch(records, fields, options.id_field, max_bytes=options.max_record_bytes,
                         max_depth=options.max_depth)
    ids, rows, positions = parsed.ids, parsed.rows, parsed.positions
    outputs: list = [None] * len(ids)
    for position, message in parsed.errors.items():
        outputs[position] = {"id": ids[position], "error": message}
    if positions:
        scored = explained(kernel, rows, offset, names, top_features, options.explain,
                           ids=[ids[p] for p in positions])
        for position, out in zip(positions, scored, strict=True):
            outputs[position] = out
    return ScoredBatch(outputs, rows, positions)


@runtime_checkable
class Scoring(Protocol):
    """What every transport scores with: :class:`~streammix.AnomalyScorer` (static) and
    :class:`~streammix.scoring.adaptive.AdaptiveScoring` implement it."""

    def feature_names(self) -> list[str]:
        """The fields a dict record needs, in the model's order."""

    def score_batch(self, records: Sequence, **options) -> list[dict]:
        """One output per record of an in-memory micro-batch, in order (in this thread;
        adaptive scoring adds its drift events after the record where each fired)."""

    def score_batches(self, records: Iterable, *, batch_size: int = 256,
                      max_latency_ms: float = 10.0, **options) -> Iterator[list[dict]]:
        """:meth:`score_batch` over the micro-batches of a stream that may block."""

    def close(self) -> None:
        """A clean stop (end of input, SIGTERM, SIGINT): write what must survive it."""


def json_bytes(out: dict) -> bytes:
    """One output as strict JSON (orjson: no NaN or Infinity, UTF-8): the encoding of
    every transport that writes JSON; an error record if the output cannot be one."""
    try:
        return orjson.dumps(out)
    except TypeError as exc:
        return orjson.dumps({"id": None, "error": f"output not representable as JSON ({exc})"})


def json_lines(outputs: list[dict]) -> bytes:
    """Outputs as NDJSON, one line each."""
    return b"".join([json_bytes(out) + b"\n" for out in outputs])


def json_array(outputs: list[dict]) -> bytes:
    """Outputs as one JSON array (encoded in one call when every output can be)."""
    try:
        return orjson.dumps(outputs)
    except TypeError:
        return b"[" + b",".join(map(json_bytes, outputs)) + b"]"


def json_line(out: dict) -> str:
    """:func:`json_bytes` as text."""
    return json_bytes(out).decode("utf-8")


_CONSTANTS = {True: "true", False: "false", None: "null"}


def field_text(value) -> str:
    """One output value as a flat stream field (Redis): a string as it is, every other
    value (numbers, flags, lists, null) as its JSON text; TypeError if JSON cannot
    hold it."""
    kind = type(value)
    if kind is str:
        return value
    if kind is float and value - value == 0:  # finite: repr is its JSON
        return repr(value)
    if kind is bool or value is None:
        return _CONSTANTS[value]
    return orjson.dumps(value).decode()


def field_texts(values: list) -> list[str]:
    """:func:`field_text` of a column of values, a whole column at once when its values
    are of one plain type."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return values
    if kinds == {bool}:
        return [_CONSTANTS[v] for v in values]
    if kinds == {float} and np.isfinite(values).all():
        return list(map(float.__repr__, values))
    if kinds == {int}:
        return list(map(int.__repr__, values))
    return list(map(field_text, values))


def output_fields(out: dict) -> list[str]:
    """One output as flat stream fields (Redis): its keys, each followed by
    :func:`field_text` of its value."""
    flat = []
    try:
        for key, value in out.items():
            flat += (key, field_text(value))
    except TypeError as exc:
        return ["id", "null", "error", f"output not representable as JSON ({exc})"]
    return flat
