"""Out-of-core k-means: Lloyd iterations as map-reduce passes, k-means|| seeding."""

from __future__ import annotations

import math
import warnings
from operator import add
from typing import ClassVar

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin

from ..core import kmeans as km
from ..core.sparse import dense_rows
from ..engine import Run, iterate
from ..engine.iterate import batch_map_reduce
from ..engine.sampling import rows_at, sample_weighted_rows
from ..exceptions import ConvergenceWarning
from .base import StreammixEstimator, restart_seeds
from .persistence import register

#: Rows of the in-memory sample that out-of-core ``"k-means++"``, ``"random"``
#: and callable initialisations draw from.
INIT_SAMPLE_ROWS = 100_000

INITS = ("auto", "k-means++", "k-means||", "random")


def _labels(centers, block, start):
    return km.nearest(block, centers)[0]


def _distances(centers, block, start):
    return km.distances(block, centers).astype(block.dtype, copy=False)  # the input's dtype


def resolve_init(init, source) -> str | np.ndarray:
    """``"auto"`` is k-means++ for in-memory input, k-means|| for out-of-core input."""
    if isinstance(init, str) and init == "auto":
        return "k-means++" if source.in_memory else "k-means||"
    return init


def initial_centers(engine, source, init, n_clusters, seeds, *, oversampling_factor=2.0,
                    rounds=5):
    """Starting centres for each seed (one restart per seed), sharing the data passes.

    ``n_clusters`` is one number, or one per seed (a batch of different k).

    * array: used as given (one restart);
    * ``"k-means++"``: greedy k-means++ on the data if it is in memory, else on a
      uniform sample of at most ``INIT_SAMPLE_ROWS`` rows (one pass);
    * ``"random"``: k distinct rows drawn uniformly (from that sample);
    * callable ``init(X, n_clusters, random_state=RandomState)``: called on the
      data in memory, else on the sample, as scikit-learn calls it;
    * ``"k-means||"``: Bahmani et al.'s scalable k-means++, ``rounds`` passes
      plus one to weight the candidates (see :func:`kmeans_parallel`).
    """
    rngs = [np.random.default_rng(s) for s in seeds]
    ks = [int(k) for k in np.broadcast_to(n_clusters, len(rngs))]
    if not isinstance(init, str) and not callable(init):
        return [np.array(init, dtype=np.float64)]
    if isinstance(init, str) and init == "k-means||":
        # a first centre, the rounds, and the candidates' counts
        with engine.stage("initialisation: k-means||", rounds + 2):
            return kmeans_parallel(engine, source, ks, rngs,
                                   oversampling_factor=oversampling_factor, rounds=rounds)
    if source.in_memory:
        data, weights = source.checked_array(), source.sample_weight
    else:
        name = init if isinstance(init, str) else "given function"
        with engine.stage(f"initialisation: {name} (sample rows)", 1):
            data, weights = sample_weighted_rows(engine, source, INIT_SAMPLE_ROWS,
                                                 rngs[0].spawn(1)[0])
    if callable(init):  # scikit-learn's call: init(X, n_clusters, random_state=RandomState)
        return [check_centers(init(data, k, random_state=np.random.RandomState(
            np.random.MT19937(rng.integers(2**63)))), k, source.n_features)
            for k, rng in zip(ks, rngs, strict=True)]
    if init == "random":  # k distinct rows, drawn in proportion to their weights
        p = None if weights is None else weights / weights.sum()
        return [dense_rows(data, rng.choice(data.shape[0], k, replace=False, p=p))
                for k, rng in zip(ks, rngs, strict=True)]
    return [dense_rows(data, km.kmeans_plusplus(data, k, rng, weights=weights))
            for k, rng in zip(ks, rngs, strict=True)]


def check_centers(centers, n_clusters, n_features) -> np.ndarray:
    """Initial centres as float64, or scikit-learn's ValueError for a wrong shape."""
    centers = np.array(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[0] != n_clusters:
        raise ValueError(f"The shape of the initial centers {centers.shape} does not match "
                         f"the number of clusters {n_clusters}.")
    if centers.shape[1] != n_features:
        raise ValueError(f"The shape of the initial centers {centers.shape} does not match "
                         f"the number of features of the data {n_features}.")
    return centers


def kmeans_parallel(engine, source, ks, rngs, *, oversampling_factor=2.0, rounds=5):
    """k-means|| seeding (Bahmani et al. 2012) for each (k, generator), as one batch.

    The first centre is a uniformly random row (read from its chunk alone).
    Each of ``rounds`` passes selects every row independently with
    probability min(1, l d^2(x) / phi), l = ``oversampling_factor * k``; one
    more pass counts the rows nearest to each candidate, and the best of
    ``LOCAL_RESTARTS`` weighted k-means++ + Lloyd runs on the candidates, in
    memory, picks the k centres. Per-row draws are tied to the row, so the result does not
    depend on the chunking.
    """
    candidates = [rows_at(engine, source, [int(rng.integers(source.n_rows))]) for rng in rngs]
    for _ in range(rounds):
        specs = [(c, int(rng.integers(2**63)), oversampling_factor * k)
                 for c, k, rng in zip(candidates, ks, rngs, strict=True)]
        found = batch_map_reduce(engine, source, km.oversample, specs)
        candidates = [np.concatenate([c, f.selected()]) for c, f in zip(candidates, found,
                                                                         strict=True)]
    weights = batch_map_reduce(engine, source, km.nearest_counts, candidates, add)
    centers = []
    for cand, weight, k, rng in zip(candidates, weights, ks, rngs, strict=True):
        if len(cand) < k:  # fewer distinct rows than clusters: repeat some
            extra = rng.choice(len(cand), k - len(cand))
            cand, weight = np.concatenate([cand, cand[extra]]), np.concatenate(
                [weight, np.zeros(len(extra))])
        centers.append(_recluster(cand, weight + 1e-300, k, rng))
    return centers


#: Restarts of the in-memory re-clustering of k-means|| candidates: a few
#: hundred weighted points, so restarts cost nothing next to a data pass, and
#: one restart alone often lands in a poor local optimum.
LOCAL_RESTARTS = 10


def _recluster(points, weights, n_clusters, rng):
    """Best of several weighted k-means++ + Lloyd runs on the candidates."""
    best, best_cost = None, np.inf
    for _ in range(LOCAL_RESTARTS):
        seeded = points[km.kmeans_plusplus(points, n_clusters, rng, weights=weights)]
        centers = km.lloyd(points, seeded, weights=weights)
        cost = float(weights @ km.min_sq_distances(points, centers))
        if cost < best_cost:
            best, best_cost = centers, cost
    return best


def run_lloyd(engine, source, starts, *, max_iter, tol, verbose=0, final_pass=True):
    """Lloyd iterations for every start as one batch: one pass per iteration.

    ``tol`` is relative to the data's mean per-feature variance (measured in
    the first pass). Returns the runs; with ``final_pass``, each run's
    ``extra["final_stats"]`` holds the statistics of its final centres (an
    extra pass unless the last iteration left the centres unchanged).
    """
    def update(run, stats):
        if "tol" not in run.extra:  # the first pass measured the data's variance
            run.extra["tol"] = tol * km.mean_variance(stats) if tol else 0.0
        previous, run.extra["last_stats"] = run.extra.get("last_stats"), stats
        if previous is not None and km.same_partition(previous, stats):
            # scikit-learn's strict convergence: the labels did not change, so the
            # centres are final (recomputing them would only add rounding noise).
            run.extra["final_stats"] = stats
            if verbose:
                print(f"Converged at iteration {run.n_iter - 1}: strict convergence.")
            return run.params, stats.inertia, True
        far_rows = rows_at(engine, source, km.rows_to_relocate(stats))  # empty clusters only
        new, shift, _ = km.lloyd_update(run.params.centers, stats, far_rows)
        run.extra["final_stats"] = stats if shift == 0 else None
        converged = shift <= run.extra["tol"]
        if verbose:  # scikit-learn's lines, on stdout
            print(f"Iteration {run.n_iter - 1}, inertia {stats.inertia}.")
            if converged:
                print(f"Converged at iteration {run.n_iter - 1}: center shift {shift} within "
                      f"tolerance {run.extra['tol']}.")
        return km.LloydParams(new), stats.inertia, converged

    if verbose:
        print("Initialization complete")
    # The first pass also measures the data's variance, for the tolerance.
    runs = [Run(km.LloydParams(np.asarray(c, dtype=np.float64), moments=True)) for c in starts]
    iterate(engine, source, runs, step=km.lloyd_stats, update=update, max_iter=max_iter)
    pending = [run for run in runs if final_pass and run.extra.get("final_stats") is None]
    if pending:  # the final centres' inertia and cluster sizes: one more pass
        finals = batch_map_reduce(engine, source, km.lloyd_stats,
                                  [km.LloydParams(run.params.centers) for run in pending])
        for run, stats in zip(pending, finals, strict=True):
            run.extra["final_stats"] = stats
    return runs


class CentersModel(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin,
                   StreammixEstimator):
    """What every centre-based model does once fitted: predict, transform, score, save.

    scikit-learn's mixins (as its own k-means classes use) give ``set_output``
    and ``get_feature_names_out`` (``kmeans0``, ``kmeans1``, ...).
    """

    _fitted_attribute = "cluster_centers_"
    _accept_sparse = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    @property
    def _n_features_out(self):
        """Columns of ``transform``: one distance per centre."""
        return self.cluster_centers_.shape[0]

    def _centers64(self):
        """The fitted centres in float64, whatever the dtype of the attribute."""
        self._check_fitted()
        return np.asarray(self.cluster_centers_, dtype=np.float64)

    def _per_row(self, fn, X, width=None, dtype=None):
        return self._apply(fn, self._centers64(), X, width=width, dtype=dtype)

    def predict(self, X):
        """Index of the nearest centre for each row (lazy Dask array out-of-core)."""
        return self._per_row(_labels, X, dtype=np.int64)

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` and the labels of ``X``."""
        self.fit(X, sample_weight=sample_weight)
        return self.labels_ if hasattr(self, "labels_") else self.predict(X)

    def transform(self, X):
        """Euclidean distance of each row to every centre, shape (n_samples, n_clusters).

        In the input's dtype (float32 in, float32 out), as in scikit-learn.
        """
        return self._per_row(_distances, X, width=self.n_clusters)

    def fit_transform(self, X, y=None, sample_weight=None):
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (weighted) inertia of ``X`` for the fitted centres (one pass)."""
        source = self._source(X, fitted=True, sample_weight=sample_weight)
        with self._engine() as engine:
            stats = engine.map_reduce(km.lloyd_stats, km.LloydParams(self._centers64()),
                                      source)
        return -float(stats.inertia)

    def _model_arrays(self) -> dict:
        """Fitted arrays of a model file, with their shapes."""
        return {"cluster_centers_": (self.n_clusters, self.n_features_in_)}

    def _score_range(self) -> tuple[float, float]:
        """Scores (minus the distance to the nearest centre) are at most 0; how low the
        model's own data goes only its calibration can say."""
        return -math.inf, 0.0

    def _check_model(self):
        """Check loaded attributes beyond their types and shapes."""
        if self.inertia_ < 0:
            raise ValueError(f"attribute 'inertia_' must be >= 0, got {self.inertia_}")

    def _set_labels(self, engine, source):
        """``labels_`` of the fitted centres for in-memory input (one pass); none out-of-core."""
        if source.in_memory:
            self.labels_ = np.concatenate(engine.map_blocks(_labels, self._centers64(), source))
        elif hasattr(self, "labels_"):
            del self.labels_


@register
class KMeans(CentersModel):
    """K-means clustering with Lloyd iterations as map-reduce passes over any source.

    From the same ``init`` array, centres, ``inertia_``, ``n_iter_`` and labels
    equal scikit-learn's ``KMeans`` (to rounding), in memory or out-of-core and
    for any chunking. ``n_init`` restarts run as a batch inside the same passes.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"auto", "k-means++", "k-means||", "random"}, callable or array, default="auto"
        ``"auto"`` is ``"k-means++"`` for in-memory input (scikit-learn's
        default) and ``"k-means||"`` for out-of-core input (Parquet, Zarr,
        Dask). ``"k-means++"`` on out-of-core input seeds on a uniform
        in-memory sample of at most 100 000 rows, as do ``"random"`` and a
        callable, called as scikit-learn calls it, ``init(X, n_clusters,
        random_state=RandomState)`` (X: the sample out-of-core), and which
        must return an (n_clusters, n_features) array. ``"k-means||"`` takes
        ``init_rounds`` passes plus one (Bahmani et al. 2012).
    n_init : "auto" or int, default="auto"
        Restarts; "auto" is 1 for k-means++/k-means||/arrays, 10 for random and
        callables, as in scikit-learn. The restart with the lowest inertia wins.
    max_iter : int, default=300
    tol : float, default=1e-4
        Stop when the squared centre shift is at most ``tol`` times the mean
        per-feature variance of the data.
    verbose : int, default=0
    random_state : int, Generator or None
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility; streammix never modifies X.
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Both run the same Lloyd passes, so they give the same model, as
        scikit-learn's two algorithms do. Elkan's triangle-inequality bounds
        save distance computations by keeping per-row bounds in memory between
        iterations; out-of-core, a pass streams the data and the distance GEMM
        costs less than storing and re-reading those bounds, so "elkan" is
        accepted for compatibility and runs Lloyd.
    oversampling_factor : float, default=2.0
        k-means|| selects about ``oversampling_factor * n_clusters`` rows per round.
    init_rounds : int, default=5
        Rounds (data passes) of k-means||.
    chunk_size, dtype, scheduler, n_workers, checkpoint, restart, cache, storage_options
        As for :class:`streammix.GaussianMixture`; the checkpoint covers the
        seeding (k-means|| rounds included) and every Lloyd iteration.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    inertia_ : float
    n_iter_ : int
    labels_ : ndarray of shape (n_samples,), only when the input was in memory
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when the data has column names)

    Examples
    --------
    >>> import numpy as np
    >>> import streammix as sm
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
    >>> km = sm.KMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(km.cluster_centers_[:, 0].tolist())
    [1.0, 10.0]
    >>> km.predict(np.array([[0.0, 0.0], [12.0, 3.0]])).tolist() == [
    ...     km.labels_[0], km.labels_[3]]
    True
    """

    #: Model-file attributes held in the metadata, by kind (see ``persistence``);
    #: ``labels_`` belong to the training data, not to the model, and are not saved.
    _model_scalars: ClassVar[dict] = {"inertia_": float, "n_iter_": int, "n_features_in_": int,
                                      "feature_names_in_": list[str]}

    def __init__(self, n_clusters=8, *, init="auto", n_init="auto", max_iter=300, tol=1e-4,
                 verbose=0, random_state=None, copy_x=True, algorithm="lloyd",
                 oversampling_factor=2.0, init_rounds=5, chunk_size=None, dtype=None,
                 scheduler=None, n_workers=None, checkpoint=None, restart=False, cache="auto",
                 storage_options=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.checkpoint = checkpoint
        self.restart = restart
        self.cache = cache
        self.storage_options = storage_options

    def _check_params(self, n_features):
        """Validate the parameters for data of ``n_features`` columns; returns n_init."""
        self._check_common_params()
        self._check_integer("n_clusters", 1)
        self._check_integer("max_iter", 1)
        self._check_integer("init_rounds", 1)
        self._check_number("tol")
        self._check_number("oversampling_factor")
        k = self.n_clusters
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"The 'algorithm' parameter of KMeans must be a str among "
                             f"{{'lloyd', 'elkan'}}. Got {self.algorithm!r} instead.")
        if self.algorithm == "elkan" and k == 1:
            warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using "
                          "'lloyd' instead.", RuntimeWarning, stacklevel=3)
        init = self.init
        if isinstance(init, str):
            if init not in INITS:
                raise ValueError(f"init must be one of {INITS}, a callable or an array, "
                                 f"got {init!r}")
        elif not callable(init):
            check_centers(init, k, n_features)
        if self.n_init == "auto":
            return 10 if (isinstance(init, str) and init == "random") or callable(init) else 1
        if not isinstance(self.n_init, int | np.integer) or self.n_init < 1:
            raise ValueError(f"n_init must be 'auto' or an integer >= 1, got {self.n_init!r}")
        if not isinstance(init, str) and not callable(init) and self.n_init != 1:
            warnings.warn("Explicit initial center position passed: performing only one init "
                          f"in KMeans instead of n_init={self.n_init}.", RuntimeWarning,
                          stacklevel=3)
            return 1
        return int(self.n_init)

    def fit(self, X, y=None, sample_weight=None):
        """Compute the k-means clustering of ``X`` (any input streammix reads).

        Parameters
        ----------
        X : array-like, scipy.sparse matrix, Dask collection, Zarr array, or path
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each row in the centres, the inertia and the seeding, as
            in scikit-learn. For Parquet, a weight column: see
            :func:`streammix.read_parquet` (``weight_column=``).

        Returns
        -------
        self
        """
        source = self._source(X, sample_weight=sample_weight)
        n_init = self._check_params(source.n_features)
        if source.n_rows < self.n_clusters:
            raise ValueError(f"n_samples={source.n_rows} should be >= "
                             f"n_clusters={self.n_clusters}.")
        with self._fit_engine(source) as engine:
            seeds = restart_seeds(self._root_seed(engine), n_init)
            init = resolve_init(self.init, source)
            starts = initial_centers(engine, source, init, self.n_clusters, seeds,
                                     oversampling_factor=self.oversampling_factor,
                                     rounds=self.init_rounds)
            runs = run_lloyd(engine, source, starts, max_iter=self.max_iter, tol=self.tol,
                             verbose=self.verbose)
            best = min(runs, key=lambda run: run.extra["final_stats"].inertia)  # first on ties
            self.cluster_centers_ = best.params.centers
            self._set_labels(engine, source)
        self.cluster_centers_ = self.cluster_centers_.astype(source.dtype)  # as scikit-learn
        final = best.extra["final_stats"]
        self.inertia_ = float(final.inertia)
        self.n_iter_ = best.n_iter
        self._set_features(source)
        distinct = int((final.counts > 0).sum())
        if distinct < self.n_clusters:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than "
                          f"n_clusters ({self.n_clusters}). Possibly due to duplicate points "
                          "in X.", ConvergenceWarning, stacklevel=2)
        return self


