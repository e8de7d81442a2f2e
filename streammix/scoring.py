"""Scoring whole datasets to Parquet, and watching a folder for new files."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._atomic import atomic_write
from .estimators.anomaly import AnomalyScorer
from .io import ParquetSource

PROGRESS_FILE = ".streammix-watch.json"


def _scores_and_clusters(spec, block, start):
    score, params, labels = spec
    return np.column_stack([score(params, block, start), labels(params, block, start)])


def score_to_parquet(scorer: AnomalyScorer, data, output, *, id_field="id") -> dict:
    """Score every row of ``data`` out-of-core and write ``output`` (Parquet), chunk by chunk.

    Columns: ``id_field`` when the input has it, ``score``, ``anomaly``,
    ``cluster``. The file appears atomically. Returns counts of rows and anomalies.
    """
    from .estimators.anomaly import _gmm_scores
    from .estimators.gaussian_mixture import _labels as gmm_labels
    from .estimators.kmeans import _labels as center_labels

    score, params = scorer._scoring()
    labels = gmm_labels if score is _gmm_scores else center_labels
    offset = scorer._offset()
    source = scorer.model._source(data, fitted=True)
    with_ids = isinstance(source, ParquetSource) and source.has_column(id_field)
    rows = anomalies = 0
    with atomic_write(output) as handle, scorer.model._engine() as engine:
        writer = None
        for chunk, result in engine.iter_map(_scores_and_clusters, (score, params, labels),
                                             source):
            columns = {}
            if with_ids:
                columns[id_field] = source.read_column(chunk, id_field)
            flagged = result[:, 0] < offset
            columns.update(score=result[:, 0], anomaly=flagged, cluster=result[:, 1].astype(int))
            table = pa.table(columns)
            writer = writer or pq.ParquetWriter(handle, table.schema)
            writer.write_table(table)
            rows += len(result)
            anomalies += int(flagged.sum())
        if writer is not None:
            writer.close()
    return {"rows": rows, "anomalies": anomalies}


def _load_progress(outdir):
    path = os.path.join(outdir, PROGRESS_FILE)
    if not os.path.exists(path):
        return set()
    with open(path) as handle:
        return set(json.load(handle)["done"])


def _new_files(directory, done):
    return [name for name in sorted(os.listdir(directory))
            if name.endswith(".parquet") and not name.startswith((".", "_")) and name not in done]


def watch(scorer: AnomalyScorer, directory, outdir, *, id_field="id", once=False,
          poll_interval=1.0, report=None):
    """Score each new Parquet file of ``directory`` into ``outdir``, as files appear.

    Producers must write files atomically (a temporary or hidden name, then a
    rename). ``outdir`` keeps the names of the files done in
    ``.streammix-watch.json``, written after each file's scores, so a restart
    neither skips nor repeats a file. With ``once``, stop when no new file is
    left; otherwise poll every ``poll_interval`` seconds.
    """
    os.makedirs(outdir, exist_ok=True)
    done = _load_progress(outdir)
    while True:
        pending = _new_files(directory, done)
        for name in pending:
            stem = name[: -len(".parquet")]
            counts = score_to_parquet(scorer, os.path.join(directory, name),
                                      os.path.join(outdir, f"{stem}.scores.parquet"),
                                      id_field=id_field)
            done.add(name)
            with atomic_write(os.path.join(outdir, PROGRESS_FILE), "w") as handle:
                json.dump({"done": sorted(done)}, handle)
            if report is not None:
                report(name, counts)
        if once and not pending:
            return done
        if not pending:
            time.sleep(poll_interval)
