"""The anomaly scorer: scikit-learn's outlier-detector shape over a fitted model, with a
threshold calibrated on the training data; it scores streams through the pipeline."""

from __future__ import annotations

import math
import warnings
from operator import add

import numpy as np
from sklearn.base import OutlierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..core import gaussian as gm
from ..core import kmeans as km
from ..core import quantile as qt
from ..core.calibration import check_contamination, outside, widened
from ..estimators.base import StreammixEstimator, check_random_state
from ..estimators.kmeans import CentersModel
from ..estimators.kmeans import _labels as center_labels
from ..estimators.mixture import BaseMixture
from ..estimators.mixture import _labels as gmm_labels
from ..exceptions import ThresholdWarning
from ..io.split import split_rows, split_seed
from . import pipeline
from .adaptive import AdaptiveScoring
from .records import MAX_LATENCY_MS, MICRO_BATCH, micro_batches

#: Scores kept in the first calibration pass; brackets the quantile tightly.
CALIBRATION_SAMPLE = 100_000

#: Where ``fit`` calibrates: on the rows the model was fitted on, or on rows it never saw.
CALIBRATIONS = ("train", "holdout")


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
        Unfitted: ``fit`` fits a clone of it (so the scorer clones, and goes into
        ``cross_val_score`` and ``GridSearchCV`` as IsolationForest does). Fitted
        (or wrapped in scikit-learn's ``FrozenEstimator``): used as it is, and
        ``fit`` only calibrates. If it carries a calibrated threshold (see
        :meth:`save`, ``streammix calibrate``), ``offset_`` starts from it.
    contamination : float in (0, 0.5], default=0.01
        Fraction of the calibration rows that ``fit`` puts below the threshold.
    threshold : float, optional
        An explicit threshold on the score; ``fit`` then only fits an unfitted
        model. A threshold outside the range of scores the model gives its own
        data (it would flag every record, or almost none) gives a
        :class:`~streammix.ThresholdWarning`.
    calibration : {"train", "holdout"}, default="train"
        ``"holdout"``: ``fit`` fits the model on the rows of ``X`` outside a seeded
        share ``holdout_fraction`` and calibrates the threshold on that share, which
        the fit never sees. The threshold then flags about ``contamination`` of new
        normal records; calibrated on the training rows, it flags more (the model
        fits them better than new ones). Needs an unfitted ``model``.
    holdout_fraction : float in (0, 1), default=0.2
        The share of rows held out with ``calibration="holdout"``. A row is held
        out by a draw keyed by ``random_state`` and its row number: the same rows
        whatever the chunking, and out-of-core.
    random_state : int, Generator or None, default=None
        Seeds the held-out split.
    top_features : int, default=3
        Features named in each record's explanation.

    Attributes
    ----------
    offset_ : float
        The threshold: ``decision_function = score_samples - offset_``.
    model_ : estimator
        The fitted model that scores: ``model`` when it was fitted, else the clone
        ``fit`` fitted.
    score_range_ : tuple of float
        The range of scores the model gives its own data (for a Gaussian mixture:
        its highest density, and the score only a share 1e-9 of its own draws
        falls below; for k-means: 0, and twice the largest distance seen in
        calibration), widened to hold a calibrated threshold. Saved with the
        model; a model file whose threshold lies outside it does not load.

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

    An unfitted model is fitted by ``fit``; with ``calibration="holdout"`` on 80 %
    of the rows, the threshold calibrated on the other 20 %:

    >>> held = sm.AnomalyScorer(sm.GaussianMixture(1, random_state=0), contamination=0.05,
    ...                         calibration="holdout", random_state=0).fit(X)
    >>> held.model_.n_features_in_
    2
    """

    _fitted_attribute = "offset_"

    def __init__(self, model, *, contamination=0.01, threshold=None, calibration="train",
                 holdout_fraction=0.2, random_state=None, top_features=pipeline.TOP_FEATURES):
        self.model = model
        self.contamination = contamination
        self.threshold = threshold
        self.calibration = calibration
        self.holdout_fraction = holdout_fraction
        self.random_state = random_state
        self.top_features = top_features

    @property
    def model_(self):
        """The fitted model that scores: the one ``fit`` fitted, else ``model`` itself."""
        fitted, source = self.__dict__.get("_fitted_model"), self.__dict__.get("_fitted_from")
        # a model given since (set_params, assignment) is the one that scores
        return fitted if fitted is not None and source is self.model else _unfrozen(self.model)

    @model_.setter
    def model_(self, model):
        self._fitted_model, self._fitted_from = model, self.model

    @property
    def score_range_(self) -> tuple[float, float]:
        """The range of scores the model gives its own data (see the class)."""
        calibrated = self.__dict__.get("_score_range")
        if calibrated is not None:
            return calibrated
        recorded = getattr(self.model_, "anomaly_score_range_", None)
        return tuple(recorded) if recorded is not None else self.model_._score_range()

    @property
    def offset_(self) -> float:
        """The threshold: calibrated by ``fit``, else ``threshold``, else the model's saved one."""
        if getattr(self, "_calibrated", None) is not None:
            return self._calibrated
        if self.threshold is not None:
            return float(self.threshold)
        saved = getattr(self.model_, "anomaly_threshold_", None)
        if saved is None:
            raise AttributeError("offset_")
        return float(saved)

    @offset_.setter
    def offset_(self, value):
        self._calibrated = float(value)

    def _warn_if_outside(self, threshold) -> None:
        """A :class:`ThresholdWarning` when an explicit ``threshold`` flags every record,
        or almost none, of the model's own data."""
        why = outside(self.score_range_, float(threshold))
        if why is not None:
            warnings.warn(f"{why}; the model's own data scores in [{self.score_range_[0]:.6g}, "
                          f"{self.score_range_[1]:.6g}]", ThresholdWarning, stacklevel=3)

    # -- the model's scores ---------------------------------------------------
    def _kernel(self) -> pipeline.Kernel:
        """The wrapped model's score, label and explanation functions, with its parameters."""
        model = self.model_
        if isinstance(model, BaseMixture):
            return pipeline.Kernel(_gmm_scores, gmm_labels, _gmm_explain, model._gaussian())
        if isinstance(model, CentersModel):
            return pipeline.Kernel(_center_scores, center_labels, _center_explain,
                                   model._centers64())
        raise TypeError(f"AnomalyScorer needs a GaussianMixture, KMeans or MiniBatchKMeans, "
                        f"got {type(model).__name__}")

    def _scoring(self):
        """(score function, its parameters, label function) for the wrapped model's chunks."""
        kernel = self._kernel()
        return kernel.score, kernel.params, kernel.labels

    def _offset(self) -> float:
        return pipeline.require_threshold(self)

    def fit(self, X, y=None):
        """Fit the model when it is not fitted, and calibrate ``offset_``: the
        ``contamination`` quantile of the scores of the calibration rows.

        The calibration rows are ``X`` (``calibration="train"``), or the share of
        ``X`` held out of the fit (``"holdout"``). Out-of-core in two passes (a
        sample of scores to bracket the quantile, then the exact order statistics
        inside the bracket); the result equals
        ``np.percentile(score_samples(rows), 100 * contamination)``.
        """
        if self.threshold is None:
            check_contamination(self.contamination)
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got "
                             f"{self.calibration!r}")
        given = _unfrozen(self.model)
        prefit = _is_fitted(self.model)
        fit_rows = calibration_rows = X
        if self.calibration == "holdout":
            if self.threshold is not None:
                raise ValueError("calibration='holdout' holds rows out to calibrate a threshold; "
                                 "with a given threshold nothing would use them")
            if prefit:
                raise ValueError("calibration='holdout' fits the model on the rows it does not "
                                 "hold out: give an unfitted model (calibration='train' "
                                 "calibrates a fitted one)")
            fit_rows, calibration_rows = self._split(given, X)
        model = given if prefit else clone(given).fit(fit_rows)
        self.model_ = model
        self._score_range = None
        if self.threshold is not None:
            self._warn_if_outside(self.threshold)
            self.offset_ = float(self.threshold)
            return self
        self.offset_, sample = self._calibrate(model, calibration_rows)
        low, high = model._score_range()
        if not math.isfinite(low):  # k-means: twice the largest distance calibration saw
            low = 2 * min(float(np.min(sample)), self.offset_, -np.finfo(np.float64).tiny)
        self._score_range = widened((low, high), self.offset_)
        return self

    def _split(self, model, X):
        """(rows to fit on, held-out rows to calibrate on) of ``X``, by a seeded split."""
        fraction = self.holdout_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, float | int) or \
                not 0 < fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {fraction!r}")
        seed = split_seed(check_random_state(self.random_state))
        source = clone(model)._source(X)
        kept = split_rows(source, seed, fraction, holdout=False)
        held = split_rows(source, seed, fraction, holdout=True, weighted=False)
        for part, what in ((kept, "fit on"), (held, "calibrate on")):
            if part.n_rows == 0:
                raise ValueError(f"holdout_fraction={fraction} of {source.n_rows} rows leaves "
                                 f"no row to {what}")
        return kept, held

    def _calibrate(self, model, X) -> tuple[float, np.ndarray]:
        """The ``contamination`` quantile of the scores of ``X``, and a sample of them."""
        q = self.contamination
        score, params, _ = self._scoring()
        source = model._source(X, fitted=True)
        if source.weighted:
            raise ValueError("the anomaly threshold is a quantile of unweighted rows: calibrate "
                             "on the data read without weight_column")
        n = source.n_rows
        with model._engine() as engine:
            sample = engine.map_reduce(_sample_scores, (score, params, CALIBRATION_SAMPLE, 0),
                                       source, finite=False)
            if n <= CALIBRATION_SAMPLE:  # the sample is every score
                return float(np.percentile(sample.values, 100 * q)), sample.values
            low, high = qt.bracket_from_sample(sample, q)
            while (offset := qt.quantile_from_bracket(engine.map_reduce(
                    _bracket_scores, (score, params, low, high), source, finite=False),
                    q, n)) is None:
                low, high = -np.inf, np.inf  # missed (vanishingly rare): take everything
        return offset, sample.values

    def score_samples(self, X):
        """The model's score of each row (higher is more normal)."""
        score, params, _ = self._scoring()
        return self.model_._apply(score, params, X)

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
        model = self.model_
        source = model._source(X, fitted=True)
        with model._engine() as engine:
            below, n = engine.map_reduce(_count_below, (score, params, self._offset()), source,
                                         add, finite=False)
        return below / n

    # -- explanations and streams (the Scoring protocol) -------------------------
    def feature_names(self) -> list[str]:
        """The model's feature names (``x0``, ``x1``... when it was fitted without)."""
        names = getattr(self.model_, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{j}" for j in range(self.model_.n_features_in_)]

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
        """Save the model with the threshold (read back by ``AnomalyScorer(sm.load(path))``),
        the contamination it was calibrated at, and the range of scores the model gives
        its own data. A threshold outside that range is refused (the file would not load).
        """
        offset = self._offset()
        why = outside(self.score_range_, offset)
        if why is not None:
            raise ValueError(f"not saved: {why}")
        contamination = None if self.threshold is not None else \
            check_contamination(self.contamination)
        _record_calibration(self.model_, offset, contamination, self.score_range_)
        self.model_.save(path)


def _record_calibration(model, threshold, contamination, score_range) -> None:
    """Set the attributes a model file keeps of a calibration (a range with an unknown
    end is not kept: a file without one derives it from the model)."""
    model.anomaly_threshold_, model.anomaly_contamination_ = float(threshold), contamination
    if all(math.isfinite(end) for end in score_range):
        model.anomaly_score_range_ = [float(end) for end in score_range]
    elif hasattr(model, "anomaly_score_range_"):
        del model.anomaly_score_range_


def _unfrozen(model):
    """The model inside scikit-learn's ``FrozenEstimator``, or ``model``."""
    return model.estimator if type(model).__name__ == "FrozenEstimator" else model


def _is_fitted(model) -> bool:
    try:
        check_is_fitted(model)
    except NotFittedError:
        return False
    return True
