"""Out-of-core Gaussian mixture models fitted by map-reduce EM."""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import ClassVar

import numpy as np
from sklearn.base import DensityMixin

from ..core import gaussian as gm
from ..core import online
from ..core.kmeans import nearest
from ..core.random import row_uniforms
from ..engine import Run, iterate
from ..engine.iterate import batch_map_reduce
from ..engine.sampling import rows_at
from ..exceptions import ConvergenceWarning, PrecisionWarning
from .base import StreammixEstimator, check_random_state, restart_seeds
from .kmeans import initial_centers, resolve_init, run_lloyd
from .persistence import BOUND, register

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")

# Chunk functions: module level, so that they pickle by reference to workers.
def _em_stats(params, block, start, weights=None):
    return gm.estep_stats(params, block, weights)


def _merge(a, b):
    return a.merge(b)


def _hard_assignment_stats(spec, block, start, weights=None):
    """Statistics of the partition of ``block`` by its nearest k-means centre."""
    centers, covariance_type = spec
    labels, _ = nearest(block, centers)
    resp = np.zeros((block.shape[0], centers.shape[0]), dtype=block.dtype)
    resp[np.arange(block.shape[0]), labels] = 1
    return gm.resp_stats(resp, block, centers, covariance_type, weights)


def random_responsibilities(seed: int, start: int, n_rows: int, n_components: int):
    """Uniform random responsibilities of rows ``start:start + n_rows``, rows normalised.

    The same for a row whatever the chunking (see :func:`row_uniforms`).
    """
    resp = row_uniforms(seed, start, n_rows, n_components)
    return resp / resp.sum(axis=1, keepdims=True)


def _random_stats(spec, block, start, weights=None):
    seed, shift, covariance_type = spec
    resp = random_responsibilities(seed, start, block.shape[0], shift.shape[0])
    return gm.resp_stats(resp, block, shift, covariance_type, weights)


def _labels(params, block, start):
    return gm.predict_components(params, block)


def _proba(params, block, start):
    return np.exp(gm.log_prob_resp(params, block)[1])


def _score_samples(params, block, start):
    return gm.log_prob_resp(params, block)[0]


def _log_lik_and_rows(params, block, start, weights=None):
    """(sum of log-likelihoods, rows): each weighted by the row's weight when given."""
    scores = _score_samples(params, block, start)
    if weights is None:
        return np.array([scores.sum(dtype=np.float64), block.shape[0]])
    # a row of weight 0 counts nothing, even at a log-likelihood of -inf
    return np.array([weights[weights > 0] @ scores[weights > 0], weights.sum()])


def best_run(runs, max_iter):
    """The restart scikit-learn keeps: highest final lower bound, first on ties."""
    best, best_bound = runs[-1], -np.inf
    if max_iter > 0:
        for run in runs:
            if run.history[-1] > best_bound or best_bound == -np.inf:
                best, best_bound = run, run.history[-1]
    return best, best_bound


def initial_statistics(engine, source, candidates, seeds, init_params, n_rows):
    """The statistics of the initial responsibilities of each (k, covariance type) and
    seed, with their shifts: ``[(stats, shift)]``.

    As scikit-learn initialises, from responsibilities, but for a whole batch
    of candidates (restarts, or a model-selection grid) sharing the passes.
    """
    ks = [k for k, _ in candidates]
    if init_params == "kmeans":
        # One KMeans run (n_init=1) per candidate, then the statistics of the
        # partition of all rows by nearest centre.
        starts = initial_centers(engine, source, resolve_init("auto", source), ks, seeds)
        runs = run_lloyd(engine, source, starts, max_iter=300, tol=1e-4, final_pass=False)
        shifts = [run.params.centers for run in runs]
        specs = [(centers, kind) for centers, (_, kind) in zip(shifts, candidates, strict=True)]
        all_stats = batch_map_reduce(engine, source, _hard_assignment_stats, _merge, specs)
    elif init_params == "random":
        reference = rows_at(engine, source, [0])[0]
        shifts = [np.tile(reference, (k, 1)) for k in ks]
        specs = [(int(np.random.default_rng(seed).integers(2**63)), shift, kind)
                 for seed, shift, (_, kind) in zip(seeds, shifts, candidates, strict=True)]
        all_stats = batch_map_reduce(engine, source, _random_stats, _merge, specs)
    else:  # k seed rows: by k-means++, or uniformly at random
        how = "k-means++" if init_params == "k-means++" else "random"
        shifts = initial_centers(engine, source, how, ks, seeds)
        all_stats = [gm.resp_stats(np.eye(len(points)), points, points, kind)
                     for points, (_, kind) in zip(shifts, candidates, strict=True)]
        for stats in all_stats:
            # weights are N_k / n over all rows (n: their total weight), as in scikit-learn
            stats.n_rows = n_rows
    return list(zip(all_stats, shifts, strict=True))


def initial_gaussians(engine, source, candidates, seeds, init_params, reg_covar, n_rows):
    """Initial (weights, means, covariances) for each (k, covariance type) and seed
    (see :func:`initial_statistics`)."""
    return [gm.estimate_parameters(stats, shift, reg_covar, kind, normalise_weights=False)
            for (stats, shift), (_, kind) in zip(
                initial_statistics(engine, source, candidates, seeds, init_params, n_rows),
                candidates, strict=True)]


@register
class GaussianMixture(DensityMixin, StreammixEstimator):
    """Gaussian mixture model fitted out-of-core by map-reduce EM.

    Parameters and fitted attributes are those of
    ``sklearn.mixture.GaussianMixture``; from the same initial parameters
    (``weights_init``, ``means_init``, ``precisions_init``) the fitted numbers
    agree with scikit-learn to about 1e-6 relative, whatever the chunking. Each
    EM iteration is one pass over the data; the ``n_init`` restarts share it.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Form of the component covariances.
    tol : float, default=1e-3
        Stop when the lower bound (mean log-likelihood) changes by less.
    reg_covar : float, default=1e-6
        Added to the covariance diagonals so they stay positive definite.
    max_iter : int, default=100
        EM iterations (data passes) per initialisation.
    n_init : int, default=1
        Initialisations; the one with the highest lower bound is kept. They
        run as a batch inside the same data passes.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How responsibilities are initialised, as in scikit-learn. ``"kmeans"``
        runs :class:`streammix.KMeans` out-of-core (``n_init=1`` per restart;
        k-means++ seeding in memory, k-means|| out-of-core), then takes the
        partition of all rows by nearest centre (one more pass).
        ``"k-means++"`` and ``"random_from_data"`` pick k rows (by k-means++,
        or uniformly); out-of-core they pick them from a uniform sample of at
        most 100 000 rows (one pass). ``"random"`` draws random
        responsibilities for every row (one pass), the same whatever the
        chunking.
    weights_init, means_init, precisions_init : array-like, optional
        Initial parameters; given ones override those from ``init_params``.
    random_state : int, Generator or None
        Seeds every random draw of the fit (through ``numpy.random.Generator``).
    warm_start : bool, default=False
        Continue from the fitted parameters on the next ``fit`` (``n_init`` is then 1).
    learning_decay : float, default=0.7
        ``partial_fit``: kappa in (0.5, 1] of the step size gamma_t = (t +
        learning_offset)^-kappa of stepwise online EM. Larger makes every step
        smaller (the past weighs more); (0.5, 1] is what makes the steps converge
        on a stationary stream (Cappe & Moulines 2009).
    learning_offset : float, default=10.0
        ``partial_fit``: t_0 >= 0 of the step size; larger damps the first steps.
    forgetting_factor : float in (0, 1), optional
        ``partial_fit``: instead, for tracking a stream that drifts, the past's
        weight is multiplied by f for every unit of row weight that arrives
        (step gamma = 1 - f**n for a batch of n rows; a memory of about
        1 / (1 - f) rows, whatever the batch sizes).
    verbose : int, default=0
        As in scikit-learn: 1 prints each initialisation and every
        ``verbose_interval``-th iteration on stdout, 2 adds times and the
        lower bound; any verbose level also shows a progress bar per data
        pass on stderr.
    verbose_interval : int, default=10
    chunk_size : int, optional
        Rows per chunk (default: about 8 MiB of floats). Parquet row groups
        are coalesced or decoded in batches to this size.
    dtype : {"float64", "float32"} or None, default=None
        Working dtype of the arithmetic; None follows the input, as in
        scikit-learn: float32 data gives float32 arithmetic and float32 fitted
        attributes. Statistics always add up in float64.
    scheduler : None, str or distributed.Client
        ``None``: an active ``distributed`` client if any, else Dask's
        in-process threads. A ``"tcp://host:port"`` address or a ``Client``
        runs on that cluster; ``"threads"``/``"synchronous"`` force local.
    n_workers : int, optional
        Threads of the in-process scheduler (default: all cores).
    checkpoint : str or path, optional
        Directory to checkpoint the fit in after every iteration. Re-running
        the same fit with the same directory resumes from the last completed
        iteration and ends with the same model; a checkpoint made for other
        data or parameters is refused. See docs/checkpoints.md.
    restart : bool, default=False
        Discard what ``checkpoint`` holds and start afresh.
    cache : "auto" or bool, default="auto"
        Keep decoded chunks of files in memory across passes (in-process
        scheduler); ``"auto"`` when they take less than half the available memory.
    storage_options : dict, optional
        For data given as URLs (``s3://``, ``gs://``, ``az://``, ...): options
        of the fsspec filesystem (see :func:`streammix.read_parquet`). Never
        written to a model file or a checkpoint.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
    lower_bounds_ : list of float
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when the data has column names)

    Notes
    -----
    Second moments are centred on a reference point near the data, so data far
    from the origin (offset by 1e6, say) keeps full precision, where
    scikit-learn's tied/diag/spherical estimates lose about 1e-3. A component
    whose covariance collapses (a singleton, duplicate points) raises
    :class:`~streammix.exceptions.CollapsedComponentError` saying what to
    change (``reg_covar``, ``n_components``); it is never re-seeded silently.

    Examples
    --------
    >>> import numpy as np
    >>> import streammix as sm
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))])
    >>> gmm = sm.GaussianMixture(2, random_state=0).fit(X)
    >>> np.sort(gmm.means_[:, 0]).round(0) + 0.0  # (+ 0.0: no "-0.")
    array([0., 6.])
    >>> gmm.predict(X[:3]).shape
    (3,)
    """

    #: Model-file attributes held in the metadata, by kind (see ``persistence``).
    _model_scalars: ClassVar[dict] = {"converged_": bool, "n_iter_": int, "lower_bound_": BOUND,
                                      "lower_bounds_": list[float], "n_features_in_": int,
                                      "feature_names_in_": list[str], "n_steps_": int}
    _optional_attributes = ("feature_names_in_", "n_steps_")  # files from before partial_fit
    _fitted_attribute = "means_"
    _min_samples = 2  # as scikit-learn's GaussianMixture
    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        learning_decay=0.7,
        learning_offset=10.0,
        forgetting_factor=None,
        verbose=0,
        verbose_interval=10,
        chunk_size=None,
        dtype=None,
        scheduler=None,
        n_workers=None,
        checkpoint=None,
        restart=False,
        cache="auto",
        storage_options=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.forgetting_factor = forgetting_factor
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.checkpoint = checkpoint
        self.restart = restart
        self.cache = cache
        self.storage_options = storage_options

    # -- validation -----------------------------------------------------
    def _check_mixture_params(self):
        """The checks every mixture shares (ValueError)."""
        self._check_common_params()
        self._check_integer("n_components", 1)
        self._check_integer("max_iter", 0)
        self._check_integer("n_init", 1)
        if self.covariance_type not in gm.COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {gm.COVARIANCE_TYPES}, "
                             f"got {self.covariance_type!r}")
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"init_params must be one of {INIT_PARAMS}, got {self.init_params!r}")
        self._check_number("tol")
        self._check_number("reg_covar")

    def _check_online_params(self):
        decay, factor = self.learning_decay, self.forgetting_factor
        if not (isinstance(decay, int | float) and not isinstance(decay, bool)
                and 0.5 < decay <= 1):
            raise ValueError(f"learning_decay must be in (0.5, 1], got {decay!r}")
        self._check_number("learning_offset")
        if factor is not None and not (isinstance(factor, int | float)
                                       and not isinstance(factor, bool) and 0 < factor < 1):
            raise ValueError(f"forgetting_factor must be None or in (0, 1), got {factor!r}")

    def _check_params(self, n_features):
        """Validate the parameters for data of ``n_features`` columns (ValueError)."""
        self._check_mixture_params()
        self._check_online_params()
        # scikit-learn's checks and messages for the initial parameters.
        k, kind = self.n_components, self.covariance_type
        if self.weights_init is not None:
            w = self._init_array("weights_init", "'weights'", (k,))
            if w.min() < 0 or w.max() > 1:
                raise ValueError(f"The parameter 'weights' should be in the range [0, 1], but "
                                 f"got max value {w.min():.5f}, min value {w.max():.5f}")
            if not np.allclose(w.sum(), 1.0, rtol=0, atol=1e-6):
                raise ValueError("The parameter 'weights' should be normalized, but got "
                                 f"sum(weights) = {w.sum():.5f}")
        if self.means_init is not None:
            self._init_array("means_init", "'means'", (k, n_features))
        if self.precisions_init is not None:
            name = f"'{kind} precision'"
            p = self._init_array("precisions_init", name, gm.covariance_shape(k, n_features, kind))
            stack = p if kind == "full" else p[None] if kind == "tied" else None
            if stack is not None:
                for matrix in stack:
                    if not np.allclose(matrix, matrix.T) or np.linalg.eigvalsh(matrix).min() <= 0:
                        raise ValueError(f"{name} should be symmetric, positive-definite")
            elif p.min() <= 0:
                raise ValueError(f"{name} should be positive")

    def _init_array(self, name, label, shape):
        value = np.asarray(getattr(self, name), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"The parameter {label} should have the shape of {shape}, but got "
                             f"{value.shape}")
        return value

    # -- fitting ----------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters with EM, out-of-core.

        Parameters
        ----------
        X : array-like, Dask collection, Zarr array, or path
            Any input :func:`streammix.as_source` accepts.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Each row counts this many times (scikit-learn's GaussianMixture
            has no weights: its issue #15647); integer weights give the model
            of the repeated rows. For Parquet, a weight column: see
            :func:`streammix.read_parquet` (``weight_column=``).

        Returns
        -------
        self
        """
        source = self._source(X, sample_weight=sample_weight)
        n_rows = source.n_rows
        self._check_params(source.n_features)
        if n_rows < self._min_samples:
            raise ValueError(f"Found array with {n_rows} sample(s) while a minimum of "
                             f"{self._min_samples} is required by {type(self).__name__}.")
        if n_rows < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got "
                             f"n_components = {self.n_components}, n_samples = {n_rows}")
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        with self._fit_engine(source) as engine:
            runs = self._initial_runs(engine, source, do_init)
            iterate(engine, source, runs, step=_em_stats, merge=_merge, update=self._em_update,
                    max_iter=self.max_iter, on_iteration=self._report if self.verbose else None)
        self._set_features(source)
        self._keep_best(runs, source.dtype)
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the model with the mini-batches of ``X``: stepwise online EM.

        Each chunk of ``X`` is one mini-batch (``chunk_size`` rows; an
        in-memory batch smaller than a chunk is one step): its responsibilities
        under the current parameters give its sufficient statistics, which
        are blended into the model's running statistics with step size
        gamma_t (``learning_decay``, ``learning_offset``, or the
        ``forgetting_factor``), and the M-step of the blend gives the new
        parameters. The chunks are read in order, one task each, where the
        data is (out-of-core sources and clusters included); statistics add
        up in float64 whatever the input's dtype. The first call on an
        unfitted model initialises it from its first mini-batch as ``fit``
        would; a fitted model (from ``fit`` or a model file) continues from
        its parameters. ``n_steps_`` counts the steps taken. The result
        depends only on the batches and their order.

        Parameters
        ----------
        X : array-like, Dask collection, Zarr array, or path
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._online(X, sample_weight)

    def _online(self, X, sample_weight):
        """The mini-batch loop of ``partial_fit``: one ``_online_update`` per chunk."""
        fitted = hasattr(self, self._fitted_attribute)
        source = self._source(X, fitted=fitted, sample_weight=sample_weight)
        self._check_params(source.n_features)
        plan = source.plan()
        if not fitted:
            from ..io.base import ChunkSubset

            with warnings.catch_warnings():  # a first mini-batch rarely converges: no matter
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.fit(ChunkSubset(source, plan[:1]))
            self.n_steps_, plan = 1, plan[1:]
        params = self._gaussian()
        with self._engine() as engine:
            for chunk in plan:
                stats = engine.map_reduce(_em_stats, params, source, chunks=[chunk])
                if stats.n_rows <= 0:  # rows of weight 0 teach nothing
                    continue
                params = self._online_update(params, stats)
        return self

    def _online_update(self, params, stats):
        """One stepwise-EM step (sets the fitted arrays, counts it in ``n_steps_``); the
        new E-step parameters."""
        step = getattr(self, "n_steps_", 0) + 1
        gamma = online.step_size(step, decay=self.learning_decay, offset=self.learning_offset,
                                 forgetting_factor=self.forgetting_factor, weight=stats.n_rows)
        weights, means, covariances = online.step(params, stats, gamma, self.reg_covar)
        kind = self.covariance_type
        params = gm.GaussianParams(weights, means, gm.precision_cholesky(covariances, kind),
                                   kind, covariances)
        self._set_parameters(params, self.means_.dtype)
        self.n_steps_ = step
        return params

    def _set_parameters(self, params, dtype):
        """The fitted arrays from ``params`` (the bookkeeping of ``fit`` is left as it is)."""
        self.weights_ = params.weights.astype(dtype)
        self.means_ = params.means.astype(dtype)
        self.covariances_ = params.covariances.astype(dtype)
        self.precisions_cholesky_ = params.precisions_cholesky.astype(dtype)
        self.precisions_ = gm.precisions_from_cholesky(params.precisions_cholesky,
                                                       self.covariance_type).astype(dtype)

    def _initial_runs(self, engine, source, do_init) -> list[Run]:
        """The runs the iterations start from: one per restart, or the fitted model."""
        if not do_init:
            return [Run(self._gaussian(), previous=self.lower_bound_)]
        seeds = restart_seeds(self._root_seed(engine), self.n_init)
        return [Run(p) for p in self._initial_params(engine, source, seeds,
                                                      source.total_weight())]

    def _start_fingerprint(self):
        if not (self.warm_start and hasattr(self, "converged_")):
            return None
        return [float(self.lower_bound_), self.means_.tolist(), self.weights_.tolist()]

    def _em_update(self, run, stats):
        """The M-step, and whether the lower bound has stopped moving."""
        lower_bound = stats.log_lik / stats.n_rows
        kind = run.params.covariance_type  # a model-selection batch mixes types
        weights, means, covariances = gm.estimate_parameters(
            stats, run.params.shift(), self.reg_covar, kind)
        self._check_precision(stats, covariances, kind)
        chol = gm.precision_cholesky(covariances, kind)
        params = gm.GaussianParams(weights, means, chol, kind, covariances)
        return params, lower_bound, abs(lower_bound - run.previous) < self.tol

    def _check_precision(self, stats, covariances, kind):
        """Warn when float32 arithmetic leaves fewer than 4 good digits in the covariances."""
        if np.dtype(self.dtype) != np.float32:
            return
        lost = gm.digits_cancelled(stats, covariances, kind)
        if lost > 3:
            warnings.warn(
                f"dtype='float32': the covariance estimate cancelled {lost:.1f} of float32's "
                f"~7 significant digits (clusters lie far apart relative to their spread), "
                "so covariances may be off by more than 1e-4 relative. Use dtype='float64' "
                "for this data.", PrecisionWarning, stacklevel=2)

    def _report(self, runs):
        """scikit-learn's verbose lines on stdout (the restarts run side by side here)."""
        now = time.perf_counter()
        for i, run in enumerate(runs):
            if not run.history or run.extra.get("reported") == run.n_iter:
                continue
            if run.n_iter == 1:
                print(f"Initialization {i}")
                run.extra["clock"] = run.extra["started"] = now
            if run.n_iter % self.verbose_interval == 0:
                if self.verbose >= 2:
                    change = run.history[-1] - (run.history[-2] if len(run.history) > 1
                                                else -np.inf)
                    print(f"  Iteration {run.n_iter}\t time lapse "
                          f"{now - run.extra['clock']:.5f}s\t ll change {change:.5f}")
                    run.extra["clock"] = now
                else:
                    print(f"  Iteration {run.n_iter}")
            if run.done or run.n_iter >= self.max_iter:
                state = "converged" if run.converged else "did not converge"
                if self.verbose >= 2:
                    print(f"Initialization {state}. time lapse "
                          f"{now - run.extra['started']:.5f}s\t lower bound "
                          f"{run.history[-1]:.5f}.")
                else:
                    print(f"Initialization {state}.")
            run.extra["reported"] = run.n_iter
        sys.stdout.flush()

    def _keep_best(self, runs, dtype=np.float64):
        """scikit-learn's choice: the highest final lower bound, first one on ties."""
        self._set_fitted(*best_run(runs, self.max_iter), dtype)

    def _set_fitted(self, best, best_bound, dtype=np.float64):
        """The fitted attributes, in the input's dtype (as scikit-learn gives them)."""
        self._set_parameters(best.params, dtype)
        self.n_steps_ = 0  # of partial_fit, after this fit
        self.converged_ = bool(best.converged)
        self.n_iter_ = best.n_iter
        self.lower_bound_ = float(best_bound)
        self.lower_bounds_ = list(best.history)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn("Best performing initialization did not converge. Try different init "
                          "parameters, or increase max_iter, tol, or check for degenerate data.",
                          ConvergenceWarning, stacklevel=3)

    def _initial_params(self, engine, source, seeds, n_rows):
        """One GaussianParams per initialisation (sharing the data passes)."""
        given = (self.weights_init, self.means_init, self.precisions_init)
        if all(v is not None for v in given):
            # Nothing left to estimate: every restart would start (and end) the same.
            return [self._override(None, None, None)]
        candidates = [(self.n_components, self.covariance_type)] * len(seeds)
        return [self._override(*start) for start in initial_gaussians(
            engine, source, candidates, seeds, self.init_params, self.reg_covar, n_rows)]

    def _override(self, weights, means, covariances):
        """Initial parameters, with those given by the user taking precedence."""
        kind = self.covariance_type
        if self.weights_init is not None:
            weights = np.asarray(self.weights_init, dtype=np.float64)
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64)
        if self.precisions_init is not None:
            chol = gm.precision_cholesky_from_precisions(
                np.asarray(self.precisions_init, dtype=np.float64), kind)
            covariances = gm.covariances_from_cholesky(chol, kind)
        else:
            chol = gm.precision_cholesky(covariances, kind)
        return gm.GaussianParams(weights, means, chol, kind, covariances)

    # -- using the model --------------------------------------------------
    def _mixture(self) -> gm.GaussianParams:
        """The fitted mixture (weights, means, covariances), in float64 whatever the
        dtype of the attributes: what ``sample`` draws from."""
        self._check_fitted()
        return gm.GaussianParams(*(np.asarray(a, dtype=np.float64) for a in (
            self.weights_, self.means_, self.precisions_cholesky_)), self.covariance_type,
            np.asarray(self.covariances_, dtype=np.float64))

    def _gaussian(self) -> gm.GaussianParams:
        """The parameters of the model's density (E-step, predictions, scores)."""
        return self._mixture()

    def _per_row(self, fn, X, width=None):
        dtype = np.int64 if fn is _labels else None
        return self._apply(fn, self._gaussian(), X, width=width, dtype=dtype)

    def predict(self, X):
        """Most likely component of each row.

        Returns a NumPy array for in-memory input, a lazy Dask array otherwise.
        """
        return self._per_row(_labels, X)

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` then ``predict(X)``."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def predict_proba(self, X):
        """Posterior probability of each component, shape (n_samples, n_components)."""
        return self._per_row(_proba, X, width=self.n_components)

    def score_samples(self, X):
        """Log density of each row under the model."""
        return self._per_row(_score_samples, X)

    def _total_log_lik(self, X):
        params = self._gaussian()
        source = self._source(X, fitted=True)
        with self._engine() as engine:
            total, n_rows = engine.map_reduce(_log_lik_and_rows, params, source, finite=False)
        return total, n_rows

    def score(self, X, y=None):
        """Mean log-likelihood of the rows of ``X`` (one pass)."""
        total, n_rows = self._total_log_lik(X)
        return total / n_rows

    def _n_parameters(self):
        return gm.n_parameters(self.n_components, self.means_.shape[1], self.covariance_type)

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better)."""
        total, n_rows = self._total_log_lik(X)
        return -2 * total + self._n_parameters() * math.log(n_rows)

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        total, _ = self._total_log_lik(X)
        return -2 * total + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows from the model; returns ``(X, y)``, grouped by component."""
        params = self._mixture()
        if not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r} . The sampling "
                             "requires at least one sample.")
        covariances = self.covariances_
        rng = np.random.default_rng(check_random_state(self.random_state))
        return gm.sample(params, covariances, int(n_samples), rng)

    # -- files --------------------------------------------------------------
    def _model_arrays(self) -> dict:
        """Fitted arrays of a model file, with their shapes."""
        k, d = self.n_components, self.n_features_in_
        shape = gm.covariance_shape(k, d, self.covariance_type)
        return {"weights_": (k,), "means_": (k, d), "covariances_": shape,
                "precisions_": shape, "precisions_cholesky_": shape}

    def _check_model(self):
        """Check loaded parameters: weights on the simplex, positive definite matrices."""
        weights = self.weights_
        if weights.min() < 0 or abs(weights.sum() - 1) > 1e-6:
            raise ValueError("attribute 'weights_' must be non-negative and sum to 1, got "
                             f"sum {weights.sum():.6g}")
        gm.check_covariances(self.covariances_, self.covariance_type, "covariances_")
        gm.check_covariances(self.precisions_, self.covariance_type, "precisions_")
        gm.check_precisions_cholesky(self.precisions_cholesky_, self.covariance_type)
        expected = gm.precisions_from_cholesky(np.asarray(self.precisions_cholesky_, np.float64),
                                               self.covariance_type)
        rtol = 1e-8 if self.precisions_.dtype == np.float64 else 1e-4  # float32 models
        if not np.allclose(self.precisions_, expected, rtol=rtol,
                           atol=rtol * 1e-4 * np.abs(expected).max()):
            raise ValueError("attributes 'precisions_' and 'precisions_cholesky_' disagree")
        if len(self.lower_bounds_) != self.n_iter_:
            raise ValueError(f"attribute 'lower_bounds_' has {len(self.lower_bounds_)} values "
                             f"for n_iter_={self.n_iter_}")


__all__ = ["GaussianMixture"]
