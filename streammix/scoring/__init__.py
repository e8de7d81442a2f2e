"""The scoring wing: records in, scores out, on every transport.

One floor above the estimators (it imports them, never the reverse):

* :mod:`.records` — the edge: decoding, limits, parsing records, micro-batching;
* :mod:`.pipeline` — the one path from a micro-batch of records to its outputs
  (the threshold rule, flagging, explanation, encoding) and the
  :class:`~.pipeline.Scoring` protocol every transport scores through;
* :mod:`.scorer` — :class:`AnomalyScorer`, scikit-learn's outlier-detector shape;
* :mod:`.adaptive` — :class:`AdaptiveScoring`: following drift, snapshots;
* :mod:`.batch` — whole datasets to Parquet (scores, clusters), out-of-core;
* :mod:`.watch` — a folder of Parquet files, scored as they land;
* :mod:`.stdin`, :mod:`.http`, :mod:`.redis` — the transports, thin adapters.
"""

from .adaptive import AdaptiveScoring, PageHinkley
from .batch import predict_to_parquet, score_to_parquet, write_rows
from .pipeline import RecordOptions, Scoring
from .records import RecordError
from .scorer import AnomalyScorer
from .watch import PROGRESS_FILE, watch

__all__ = ["PROGRESS_FILE", "AdaptiveScoring", "AnomalyScorer", "PageHinkley", "RecordError",
           "RecordOptions", "Scoring", "predict_to_parquet", "score_to_parquet", "watch",
           "write_rows"]
