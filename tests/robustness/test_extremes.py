"""Extreme values: scoring fails closed. A row far beyond the model is an anomaly, its
score a number below the anomaly threshold (or -inf), never NaN."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ._harness import (
    LOST,
    OTHER,
    SILENT,
    Case,
    Dataset,
    Failure,
    api,
    api_failures,
    check,
    crashed,
    last_line,
    streammix_cli,
)

ROWS = {"1e200": [1e200, -1e200, 0.0, 0.0], "1e300": [1e300] * 4}


def score_samples_case(name, row: list[float]) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        """sm.load(model).score_samples(row): a number (not NaN) below the threshold."""
        r, out = api(f"""
            model = sm.load({str(dataset.model)!r})
            score = float(model.score_samples(np.array([{row!r}]))[0])
            return {{"score": score, "threshold": float(model.anomaly_threshold_)}}
        """, ws)
        failures = api_failures(r, out)
        if failures:
            return failures
        score, threshold = out["result"]["score"], out["result"]["threshold"]
        if math.isnan(score):
            return [(SILENT, "score is NaN")]
        if not score < threshold:
            return [(SILENT, f"score {score} is not below the threshold {threshold:.4g}")]
        return []
    return Case(f"api-score_samples-{name}", job)


def predict_case(name, row: list[float]) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        """AnomalyScorer(model).predict(row) == -1: an extreme row is an anomaly."""
        r, out = api(f"""
            scorer = sm.AnomalyScorer(sm.load({str(dataset.model)!r}))
            return int(scorer.predict(np.array([{row!r}]))[0])
        """, ws)
        failures = api_failures(r, out)
        if failures:
            return failures
        return [] if out["result"] == -1 else [(SILENT, f"predict gave {out['result']}")]
    return Case(f"api-predict-{name}", job)


def scaled_dataset(dataset: Dataset, ws: Path) -> list[Failure]:
    """streammix score M DATA on the data times 1e300: exit 0, every row flagged, no NaN."""
    data = dataset.write_parquet(ws / "scaled" / "part-0.parquet", slice(0, 2000), scale=1e300)
    output = ws / "s.parquet"
    r = streammix_cli("score", dataset.model, data.parent, "-o", output, cwd=ws)
    failures = crashed(r)
    if failures:
        return failures
    if r.code != 0 or not output.exists():
        return [(OTHER, f"exit {r.code}: {last_line(r.stderr)}")]
    table = pq.read_table(output)
    scores, flagged = table["score"].to_numpy(), table["anomaly"].to_numpy()
    if len(scores) != 2000:
        failures.append((LOST, f"{len(scores)} scores for 2000 rows"))
    if np.isnan(scores).any():
        failures.append((SILENT, f"{int(np.isnan(scores).sum())} NaN scores"))
    if flagged.sum() < len(flagged):
        failures.append((SILENT, f"{int(flagged.sum())} of {len(flagged)} rows flagged "
                                 f"({last_line(r.stderr)})"))
    return failures


@pytest.mark.parametrize("case", [
    *(score_samples_case(name, row).param() for name, row in ROWS.items()),
    *(predict_case(name, row).param() for name, row in ROWS.items()),
    Case("cli-score-data-x1e300", scaled_dataset).param(),
])
def test_extreme_rows_are_anomalies(case, sweep):
    check(sweep, case)
