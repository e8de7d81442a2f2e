"""Out-of-core Gaussian mixture models fitted by map-reduce EM."""

from __future__ import annotations

import math

from ..core import gaussian as gm
from ..core import online
from ..engine import Run
from .base import restart_seeds
from .mixture import BaseMixture, initial_gaussians  # noqa: F401 -- selection imports it here
from .persistence import register


@register
class GaussianMixture(BaseMixture):
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
        self._check_initial_params(n_features)

    # -- fitting ----------------------------------------------------------
    def _initial_runs(self, engine, source, do_init) -> list[Run]:
        """The runs the iterations start from: one per restart, or the fitted model."""
        if not do_init:
            return [Run(self._gaussian(), previous=self.lower_bound_)]
        seeds = restart_seeds(self._root_seed(engine), self.n_init)
        return [Run(p) for p in self._initial_params(engine, source, seeds,
                                                      source.total_weight())]

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

    # -- criteria -----------------------------------------------------------
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


__all__ = ["GaussianMixture"]
