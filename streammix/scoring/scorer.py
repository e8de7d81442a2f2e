"""The anomaly scorer: scikit-learn's outlier-detector shape over a fitted model, with a
threshold calibrated on the training data; it scores streams through the pipeline."""

from __future__ import annotations

from operator import add

import numpy as np
from sklearn.base import OutlierMixin

from ..core import gaussian as gm
from ..core import kmeans as km
from ..core import quantile as qt
from ..estimators.base import StreammixEstimator
from ..estimators.kmeans import CentersModel
from ..estimators.kmeans import _labels as center_labels
from ..estimators.mixture import BaseMixture
from ..estimators.mixture import _labels as gmm_labels
from . import pipeline
from .adaptive import AdaptiveScoring
from .records import MAX_LATENCY_MS, MICRO_BATCH, micro_batches

#: Scores kept in the first calibration pass; brackets the quantile tightly.
CALIBRATION_SAMPLE = 100_000


def _gmm_scores(params, block, start):
    return gm.log_prob_resp(params, block)[0]


def _center_scores(centers, block, start):
    return -np.sqrt(km.nearest(block, centers)[1])


def _sample_scores(spec, block, start):
    score, params, size, seed = spec
    return qt.sample_values(score(params, block, start), start, size, seed)


def _bracket_scores(spec, block, start):
    score, params, low, high = spec
    return qt.bracket_values(score(params, block, start), low, high)


def _gmm_explain(params, X):
    return gm.explain(params, X)


def _center_explain(centers, X):
    return km.explain(centers, X)


def _count_below(spec, block, start, weights=None):
    """(rows below the threshold, rows), counted by weight for weighted rows."""
    score, params, offset = spec
    below = pipeline.flag(score(params, block, start), offset)
    if weights is None:
        return np.array([below.sum(), block.shape[0]])
    return np.array([weights @ below, weights.sum()])


class AnomalyScorer(OutlierMixin, StreammixEstimator):
    """Flags records whose score under a fitted model is unusually low.

    Follows scikit-learn's outlier-detector conventions. The score is the log
    density for a :class:`GaussianMixture`, and minus the distance to the
    nearest centre for :class:`KMeans` / :class:`MiniBatchKMeans`: higher is
    more normal.

    Parameters
    ----------
    model : GaussianMixture, BayesianGaussianMixture, KMeans or MiniBatchKMeans
        A fitted model. If it carries a calibrated threshold (see
        :meth:`save`, ``streammix calibrate``), ``offset_`` starts from it.
    contamination : float, default=0.01
        Fraction of the training data that ``fit`` puts below the threshold.
    threshold : float, optional
        An explicit threshold on the score; ``fit`` is then not needed.
    top_features : int, default=3
        Features named in each record's explanation.

    Attributes
    ----------
    offset_ : float
        The threshold: ``decision_function = score_samples - offset_``.

    Examples
    --------
    >>> import numpy as np
    >>> import streammix as sm
    >>> X = np.random.default_rng(0).normal(size=(1000, 2))
    >>> scorer = sm.AnomalyScorer(sm.GaussianMixture(1).fit(X), contamination=0.05).fit(X)
    >>> float((scorer.predict(X) == -1).mean())
    0.05
    >>> scorer.predict(np.array([[0.0, 0.0], [9.0, 9.0]])).tolist()
    [1, -1]
    """

    _fitted_attribute = "offset_"

    def __init__(self, model, *, contamination=0.01, threshold=None,
                 top_features=pipeline.TOP_FEATURES):
        self.model = model
        self.contamination = contamination
        self.threshold = threshold
        self.top_features = top_features

    @property
    def offset_(self) -> float:
        """The threshold: calibrated by ``fit``, else ``threshold``, else the model's saved one."""
        if getattr(self, "_calibrated", None) is not None:
            return self._calibrated
        if self.threshold is not None:
            return float(self.threshold)
        saved = getattr(self.model, "anomaly_threshold_", None)
        if saved is None:
            raise AttributeError("offset_")
        return float(saved)

    @offset_.setter
    def offset_(self, value):
        self._calibrated = float(value)

    # -- the model's scores ---------------------------------------------------
    def _kernel(self) -> pipeline.Kernel:
        """The wrapped model's score, label and explanation functions, with its parameters."""
        if isinstance(self.model, BaseMixture):
            return pipeline.Kernel(_gmm_scores, gmm_labels, _gmm_explain, self.model._gaussian())
        if isinstance(self.model, CentersModel):
            return pipeline.Kernel(_center_scores, center_labels, _center_explain,
                                   self.model._centers64())
        raise TypeError(f"AnomalyScorer needs a GaussianMixture, KMeans or MiniBatchKMeans, "
                        f"got {type(self.model).__name__}")

    def _scoring(self):
        """(score function, its parameters, label function) for the wrapped model's chunks."""
        kernel = self._kernel()
        return kernel.score, kernel.params, kernel.labels

    def _offset(self) -> float:
        return pipeline.require_threshold(self)

    def fit(self, X, y=None):
        """Calibrate ``offset_``: the ``contamination`` quantile of the scores of ``X``.

        Out-of-core in two passes (a sample of scores to bracket the quantile,
        then the exact order statistics inside the bracket); the result equals
        ``np.percentile(score_samples(X), 100 * contamination)``.
        """
        if self.threshold is not None:
            self.offset_ = float(self.threshold)
            return self
        q = self.contamination
        if not 0 < q < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {q!r}")
        score, params, _ = self._scoring()
        source = self.model._source(X, fitted=True)
        if source.weighted:
            raise ValueError("the anomaly threshold is a quantile of unweighted rows: calibrate "
                             "on the data read without weight_column")
        n = source.n_rows
        with self.model._engine() as engine:
            sample = engine.map_reduce(_sample_scores, (score, params, CALIBRATION_SAMPLE, 0),
                                       source, finite=False)
            if n <= CALIBRATION_SAMPLE:  # the sample is every score
                self.offset_ = float(np.percentile(sample.values, 100 * q))
                return self
            low, high = qt.bracket_from_sample(sample, q)
            while (offset := qt.quantile_from_bracket(engine.map_reduce(
                    _bracket_scores, (score, params, low, high), source, finite=False),
                    q, n)) is None:
                low, high = -np.inf, np.inf  # missed (vanishingly rare): take everything
        self.offset_ = offset
        return self

    def score_samples(self, X):
        """The model's score of each row (higher is more normal)."""
        score, params, _ = self._scoring()
        return self.model._apply(score, params, X)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative means anomalous."""
        return self.score_samples(X) - self._offset()

    def predict(self, X):
        """-1 for anomalies, +1 for normal rows."""
        anomalous = pipeline.flag(self.score_samples(X), self._offset())
        return np.where(anomalous, -1, 1) if isinstance(anomalous, np.ndarray) else \
            1 - 2 * anomalous.astype(np.int64)

    def fraction_below(self, X) -> float:
        """Fraction of the rows of ``X`` below the threshold (one pass)."""
        score, params, _ = self._scoring()
        source = self.model._source(X, fitted=True)
        with self.model._engine() as engine:
            below, n = engine.map_reduce(_count_below, (score, params, self._offset()), source,
                                         add, finite=False)
        return below / n

    # -- explanations and streams (the Scoring protocol) -------------------------
    def feature_names(self) -> list[str]:
        """The model's feature names (``x0``, ``x1``... when it was fitted without)."""
        names = getattr(self.model, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{j}" for j in range(self.model.n_features_in_)]

    _feature_names = feature_names  # the name it had

    def explain(self, X) -> list[dict]:
        """One explanation per row of in-memory ``X`` (see :meth:`score_records`)."""
        X = np.asarray(X, dtype=np.float64)
        return pipeline.explained(self._kernel(), X, self._offset(), self.feature_names(),
                                  self.top_features)

    def score_batch(self, records, **options) -> list[dict]:
        """One output per record of an in-memory list, in order, scored in this thread
        (see :meth:`score_records` for the records, outputs and options)."""
        return self._scored(records, pipeline.RecordOptions.of(options)).outputs

    def _scored(self, records, options) -> pipeline.ScoredBatch:
        return pipeline.score_batch(self._kernel(), self._offset(), records,
                                    self.feature_names(), self.top_features, options)

    def score_records(self, records, *, batch_size=MICRO_BATCH,
                      max_latency_ms=MAX_LATENCY_MS, **options):
        """Score an iterable of records in micro-batches; one output dict per record, in order.

        Records are dicts (``fields`` by name, default the model's feature
        names), sequences of values, or JSON texts. Each output holds the
        record's ``id_field`` value (``None`` when it has none), ``score``,
        ``anomaly``, ``cluster``, ``probability``, ``distance`` and
        ``top_features``; a malformed record gives ``{"id": ..., "error": ...}``
        instead. A batch is scored when it is full or ``max_latency_ms`` after
        its first record arrived, so a slow stream is scored as it comes.

        Other options (see :class:`~streammix.scoring.pipeline.RecordOptions`):
        ``id_field="id"``, ``fields``, ``max_record_bytes`` and ``max_depth`` (a
        longer or deeper text record is an error record), and ``explain=True``
        (False: an output holds only the id, ``score`` and ``anomaly``; faster).
        Scores and distances beyond the float range (a record far beyond the
        model) are written as the largest finite floats, so every output is
        valid JSON.

        Examples
        --------
        >>> import numpy as np
        >>> import streammix as sm
        >>> X = np.random.default_rng(0).normal(size=(500, 2))
        >>> scorer = sm.AnomalyScorer(sm.GaussianMixture(1).fit(X), threshold=-6.0)
        >>> stream = [{"id": 1, "x0": 0.1, "x1": 0.2}, {"id": 2, "x0": "oops", "x1": 0}]
        >>> [("error" in out, out["id"]) for out in scorer.score_records(stream)]
        [(False, 1), (True, 2)]
        """
        for batch in self.score_batches(records, batch_size=batch_size,
                                        max_latency_ms=max_latency_ms, **options):
            yield from batch

    def score_batches(self, records, *, batch_size=MICRO_BATCH,
                      max_latency_ms=MAX_LATENCY_MS, **options):
        """As :meth:`score_records`, one list of outputs per micro-batch (to flush each)."""
        record_options = pipeline.RecordOptions.of(options)
        self._offset()  # no threshold: say so before reading anything
        for batch in micro_batches(records, batch_size, max_latency_ms / 1000.0):
            yield self._scored(batch, record_options).outputs

    def close(self):
        """Nothing to keep: static scoring has no state (the Scoring protocol)."""

    def adapt(self, **options):
        """This scorer, adapting to its stream: the model learns from the records the
        calibrated model calls typical, the threshold follows the model, and a drift alarm
        watches the scores. See :class:`streammix.scoring.adaptive.AdaptiveScoring`
        for the options (``adapt=False``: the drift alarm only).

        Examples
        --------
        >>> import numpy as np
        >>> import streammix as sm
        >>> X = np.random.default_rng(0).normal(size=(2000, 2))
        >>> scorer = sm.AnomalyScorer(sm.GaussianMixture(1).fit(X), contamination=0.01).fit(X)
        >>> stream = ({"id": i, "x0": x, "x1": y} for i, (x, y) in enumerate(X))
        >>> outputs = list(scorer.adapt(window=500).score_records(stream))
        >>> len([o for o in outputs if "score" in o])
        2000
        """
        return AdaptiveScoring(self, **options)

    # -- files ----------------------------------------------------------------
    def save(self, path):
        """Save the model with the threshold (read back by ``AnomalyScorer(sm.load(path))``)."""
        self.model.anomaly_threshold_ = self._offset()
        self.model.anomaly_contamination_ = None if self.threshold is not None else \
            float(self.contamination)
        self.model.save(path)

