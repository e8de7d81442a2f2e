"""What the two Gaussian mixtures share: :class:`BaseMixture`.

:class:`~streammix.GaussianMixture` (maximum likelihood, EM) and
:class:`~streammix.BayesianGaussianMixture` (variational inference) are
siblings: both fit by iterating over one-pass sufficient statistics, both
are a density that predicts, scores and samples. ``isinstance(model,
BaseMixture)`` means "a Gaussian mixture of either kind". What differs (the
parameters, the initial runs, the update of an iteration and of a
``partial_fit`` step) each class supplies.
"""

from __future__ import annotations

import sys
import time
import warnings
from abc import ABCMeta, abstractmethod
from operator import add
from typing import ClassVar

import numpy as np
from sklearn.base import DensityMixin

from ..core import gaussian as gm
from ..core.calibration import mixture_score_range
from ..core.kmeans import nearest
from ..core.random import row_uniforms
from ..engine import Run, iterate
from ..engine.iterate import batch_map_reduce
from ..engine.sampling import rows_at
from ..exceptions import ConvergenceWarning, PrecisionWarning
from .base import StreammixEstimator, check_random_state
from .kmeans import initial_centers, resolve_init, run_lloyd
from .persistence import BOUND

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


# Chunk functions: module level, so that they pickle by reference to workers.
def _em_stats(params, block, start, weights=None):
    return gm.estep_stats(params, block, weights)


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
        with engine.stage("initialisation: k-means iterations"):  # until they converge
            runs = run_lloyd(engine, source, starts, max_iter=300, tol=1e-4, final_pass=False)
        shifts = [run.params.centers for run in runs]
        specs = [(centers, kind) for centers, (_, kind) in zip(shifts, candidates, strict=True)]
        with engine.stage("initialisation: responsibilities from k-means", 1):
            all_stats = batch_map_reduce(engine, source, _hard_assignment_stats, specs)
    elif init_params == "random":
        with engine.stage("initialisation: random responsibilities", 2):
            reference = rows_at(engine, source, [0])[0]
            shifts = [np.tile(reference, (k, 1)) for k in ks]
            specs = [(int(np.random.default_rng(seed).integers(2**63)), shift, kind)
                     for seed, shift, (_, kind) in zip(seeds, shifts, candidates, strict=True)]
            all_stats = batch_map_reduce(engine, source, _random_stats, specs)
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


def check_definite(value: np.ndarray, label: str, matrices: bool):
    """scikit-learn's check of given precisions (or a covariance prior), with its
    messages: symmetric positive-definite matrices (on the last two axes) when
    ``matrices``, else positive values."""
    if not matrices:
        if value.min() <= 0:
            raise ValueError(f"{label} should be positive")
        return
    for matrix in value.reshape(-1, *value.shape[-2:]):
        if not np.allclose(matrix, matrix.T) or np.linalg.eigvalsh(matrix).min() <= 0:
            raise ValueError(f"{label} should be symmetric, positive-definite")


class BaseMixture(DensityMixin, StreammixEstimator, metaclass=ABCMeta):
    """A Gaussian mixture fitted out-of-core, one pass over the data per iteration.

    The base of :class:`~streammix.GaussianMixture` and
    :class:`~streammix.BayesianGaussianMixture`, as scikit-learn's
    ``BaseMixture`` is of theirs. It owns the fit loop (restarts sharing each
    pass, checkpoints, scikit-learn's verbose output and choice of restart),
    ``partial_fit``'s loop over mini-batches, the uses of the fitted density
    (``predict``, ``predict_proba``, ``score_samples``, ``score``,
    ``sample``) and the model file's arrays and checks. A subclass lists its
    own constructor parameters and supplies ``_check_params``,
    ``_initial_runs``, ``_em_update`` and ``_online_update``; its E-step
    density is ``_gaussian()``.
    """

    #: Model-file attributes held in the metadata, by kind (see ``persistence``).
    _model_scalars: ClassVar[dict] = {"converged_": bool, "n_iter_": int, "lower_bound_": BOUND,
                                      "lower_bounds_": list[float], "n_features_in_": int,
                                      "feature_names_in_": list[str], "n_steps_": int}
    _optional_attributes = ("feature_names_in_", "n_steps_")  # files from before partial_fit
    _fitted_attribute = "means_"
    _min_samples = 2  # as scikit-learn's mixtures

    # -- what each mixture supplies -------------------------------------------
    @abstractmethod
    def _check_params(self, n_features):
        """Validate the parameters for data of ``n_features`` columns (ValueError)."""

    @abstractmethod
    def _initial_runs(self, engine, source, do_init) -> list[Run]:
        """The runs the iterations start from: one per restart, or (``do_init`` false:
        a warm start) the fitted model."""

    @abstractmethod
    def _em_update(self, run, stats):
        """One iteration from a pass's merged statistics: ``(the next E-step's
        parameters, the lower bound, whether it has converged)``."""

    @abstractmethod
    def _online_update(self, params, stats):
        """One ``partial_fit`` step from a mini-batch's statistics (computed with
        ``params``): sets the fitted arrays, counts the step in ``n_steps_``, and
        returns the next E-step's parameters."""

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

    def _check_initial_params(self, n_features):
        """scikit-learn's checks and messages for the initial parameters (``weights_init``,
        ``means_init``, ``precisions_init``)."""
        k, kind = self.n_components, self.covariance_type
        if self.weights_init is not None:
            w = self._param_array("weights_init", "'weights'", (k,))
            if w.min() < 0 or w.max() > 1:
                # scikit-learn's words, min and max swapped as in its message: its own test
                # file (run against this class) matches them
                raise ValueError(f"The parameter 'weights' should be in the range [0, 1], but "
                                 f"got max value {w.min():.5f}, min value {w.max():.5f}")
            if not np.allclose(w.sum(), 1.0, rtol=0, atol=1e-6):
                raise ValueError("The parameter 'weights' should be normalized, but got "
                                 f"sum(weights) = {w.sum():.5f}")
        if self.means_init is not None:
            self._param_array("means_init", "'means'", (k, n_features))
        if self.precisions_init is not None:
            name = f"'{kind} precision'"
            p = self._param_array("precisions_init", name, gm.covariance_shape(k, n_features, kind))
            check_definite(p, name, matrices=kind in ("full", "tied"))

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

    def _param_array(self, name, label, shape):
        """Parameter ``name`` as a float64 array of ``shape`` (scikit-learn's message)."""
        value = np.asarray(getattr(self, name), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"The parameter {label} should have the shape of {shape}, but got "
                             f"{value.shape}")
        return value

    # -- fitting ----------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters out-of-core: one pass over the data per iteration,
        shared by the ``n_init`` restarts.

        Parameters
        ----------
        X : array-like, Dask collection, Zarr array, or path
            Any input :func:`streammix.as_source` accepts.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Each row counts this many times (scikit-learn's mixtures have no
            weights: its issue #15647); integer weights give the model of the
            repeated rows. For Parquet, a weight column: see
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
            with engine.stage("iterations"):  # one pass each: "Iteration i" follows it
                iterate(engine, source, runs, step=_em_stats, update=self._em_update,
                        max_iter=self.max_iter,
                        on_iteration=self._report if self.verbose else None)
        self._set_features(source)
        self._keep_best(runs, source.dtype)
        return self

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

    def _set_parameters(self, params, dtype):
        """The fitted arrays from ``params`` (the bookkeeping of ``fit`` is left as it is)."""
        self.weights_ = params.weights.astype(dtype)
        self.means_ = params.means.astype(dtype)
        self.covariances_ = params.covariances.astype(dtype)
        self.precisions_cholesky_ = params.precisions_cholesky.astype(dtype)
        self.precisions_ = gm.precisions_from_cholesky(params.precisions_cholesky,
                                                       self.covariance_type).astype(dtype)

    def _start_fingerprint(self):
        if not (self.warm_start and hasattr(self, "converged_")):
            return None
        return [float(self.lower_bound_), self.means_.tolist(), self.weights_.tolist()]

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

    def _score_range(self) -> tuple[float, float]:
        """Scores the model gives its own data: never above the first bound, below the
        second only for a share 1e-9 of its draws (see :mod:`streammix.core.calibration`)."""
        return mixture_score_range(self._gaussian(), np.asarray(self.weights_, np.float64))

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
            total, n_rows = engine.map_reduce(_log_lik_and_rows, params, source, add,
                                              finite=False)
        return total, n_rows

    def score(self, X, y=None):
        """Mean log-likelihood of the rows of ``X`` (one pass)."""
        total, n_rows = self._total_log_lik(X)
        return total / n_rows

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


__all__ = ["BaseMixture"]
