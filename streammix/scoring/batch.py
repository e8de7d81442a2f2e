"""Whole datasets to Parquet, out-of-core: each row's scores, or its cluster."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..estimators import kmeans, mixture
from ..io import ParquetSource
from ..io.atomic import atomic_write, remove_stale_temporaries
from ..io.output import PartitionedOutput, is_dataset_output
from ..io.parquet import WRITE_OPTIONS
from ..io.storage import is_url
from . import pipeline
from .scorer import AnomalyScorer


@dataclasses.dataclass(frozen=True)
class _Columns:
    """A chunk's result as the output's named columns, ``id_field`` first when given."""

    to_columns: Callable
    id_field: str | None

    def table(self, source, chunk, result) -> pa.Table:
        columns = {self.id_field: source.read_column(chunk, self.id_field)} \
            if self.id_field else {}
        columns.update(self.to_columns(result))
        return pa.table(columns)


def _counts(table: pa.Table) -> dict:
    counts = {"rows": table.num_rows}
    if "anomaly" in table.column_names:
        counts["anomalies"] = int(pc.sum(table["anomaly"]).as_py() or 0)
    return counts


def _total(counts: list[dict]) -> dict:
    return {key: sum(c[key] for c in counts) for key in counts[0] if key != "index"} \
        if counts else {"rows": 0}


@dataclasses.dataclass(frozen=True)
class _PartWriter:
    """Writes one chunk's rows as a part of a partitioned output (on the worker)."""

    output: PartitionedOutput
    columns: _Columns

    def __call__(self, source, chunk, result) -> dict:
        table = self.columns.table(source, chunk, result)
        self.output.write_part(chunk.index, table)
        return {"index": chunk.index, **_counts(table)}


def write_rows(model, data, output, fn, params, to_columns, *, id_field="id") -> dict:
    """Apply ``fn`` to every chunk of ``data`` (out-of-core) and write Parquet.

    ``to_columns(result)`` (a module-level function: it may run on workers)
    turns one chunk's result into named columns; ``id_field`` is passed through
    first when the Parquet input has it. ``output`` is one file, written
    chunk by chunk by this process and appearing atomically; or a folder or
    URL prefix (see :func:`~streammix.io.output.is_dataset_output`), one part
    per chunk, committed when all exist (see :mod:`streammix.io.output`):
    written by the workers for a URL or in-process, and by this process for a
    local folder on a cluster (it may not be on the workers' disks). Returns
    the counts: ``rows``, and
    ``anomalies`` when the output has an ``anomaly`` column.
    """
    source = model._source(data, fitted=True)
    with_ids = isinstance(source, ParquetSource) and source.has_column(id_field)
    columns = _Columns(to_columns, id_field if with_ids else None)
    if is_dataset_output(output):
        target = PartitionedOutput(output, getattr(model, "storage_options", None))
        target.prepare()
        writer = _PartWriter(target, columns)
        try:
            with model._engine() as engine:
                if engine.distributed and not is_url(output):
                    # a local folder may not be on the workers' disks: this process writes
                    parts = [writer(source, chunk, result)
                             for chunk, result in engine.iter_map(fn, params, source)]
                else:
                    parts = engine.map_to(fn, params, source, writer)
            counts = _total(parts)
            target.commit(parts, counts)
        except BaseException:
            target.abort()
            raise
        return counts
    counts = []
    remove_stale_temporaries(output)  # what a killed earlier job left beside it
    with atomic_write(output) as handle, model._engine() as engine:
        writer = None
        for chunk, result in engine.iter_map(fn, params, source):
            table = columns.table(source, chunk, result)
            writer = writer or pq.ParquetWriter(handle, table.schema, **WRITE_OPTIONS)
            writer.write_table(table)
            counts.append(_counts(table))
        if writer is not None:
            writer.close()
    return _total(counts)


def _scores_and_clusters(spec, block, start):
    score, params, labels = spec
    return np.column_stack([score(params, block, start), labels(params, block, start)])


def score_to_parquet(scorer: AnomalyScorer, data, output, *, id_field="id") -> dict:
    """Score every row of ``data`` out-of-core and write ``output`` (Parquet).

    Columns: ``id_field`` when the input has it, ``score``, ``anomaly``,
    ``cluster``. Returns counts of rows and anomalies.
    """
    score, params, labels = scorer._scoring()
    counts = write_rows(scorer.model_, data, output, _scores_and_clusters, (score, params, labels),
                        partial(_score_columns, scorer._offset()), id_field=id_field)
    return {"rows": counts["rows"], "anomalies": counts.get("anomalies", 0)}


def _score_columns(offset, result) -> dict:
    anomaly = pipeline.flag(result[:, 0], offset)
    return {"score": result[:, 0], "anomaly": anomaly, "cluster": result[:, 1].astype(int)}


def _labels_and_proba(spec, block, start):
    labels, proba, params = spec
    columns = [labels(params, block, start)[:, None].astype(np.float64)]
    if proba is not None:
        columns.append(proba(params, block, start))
    return np.hstack(columns)


def predict_to_parquet(model, data, output, *, proba=False, id_field="id") -> int:
    """Write each row's cluster (and with ``proba`` each component's probability) to Parquet."""
    if isinstance(model, mixture.BaseMixture):
        spec = (mixture._labels, mixture._proba if proba else None, model._gaussian())
    elif proba:
        raise ValueError("--proba needs a Gaussian mixture; k-means has no probabilities")
    else:
        spec = (kmeans._labels, None, model._centers64())

    counts = write_rows(model, data, output, _labels_and_proba, spec, _cluster_columns,
                        id_field=id_field)
    return counts["rows"]


def _cluster_columns(result) -> dict:
    out = {"cluster": result[:, 0].astype(np.int64)}
    out.update({f"p{k}": result[:, k + 1] for k in range(result.shape[1] - 1)})
    return out


