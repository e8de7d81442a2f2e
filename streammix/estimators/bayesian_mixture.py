"""Variational Bayesian Gaussian mixtures, out-of-core: the data chooses the components."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..core import bayesian as vb
from ..core import gaussian as gm
from ..core import online
from ..engine import Run
from ..engine.iterate import batch_map_reduce
from .base import restart_seeds
from .mixture import BaseMixture, _em_stats, check_definite, initial_statistics
from .persistence import register

#: Components whose weight is above this count as effective (``info``, ``plot``).
EFFECTIVE_WEIGHT = 0.01


def _moments(full, block, start, weights=None):
    return vb.moments(full, block, weights)


@register
class BayesianGaussianMixture(BaseMixture):
    """Variational Bayesian Gaussian mixture, fitted out-of-core.

    Give it more components than the data needs: variational inference drives
    the weights of the unneeded ones towards zero (with the Dirichlet process
    prior, the default, most of them to almost exactly zero). Parameters,
    attributes and numbers are those of
    ``sklearn.mixture.BayesianGaussianMixture``: from the same initial
    responsibilities the fitted numbers agree with scikit-learn to about 1e-6
    whatever the chunking. Each variational iteration is one pass over the
    data, shared by the ``n_init`` restarts; priors that default to the data's
    mean and covariance take one more pass at the start of each fit.

    Parameters
    ----------
    n_components : int, default=1
        The most components the model may use.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Stop when the lower bound changes by less (it is a sum over the rows,
        as in scikit-learn, not a mean).
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        The initial responsibilities, as for :class:`GaussianMixture`.
    weights_init : array-like of shape (n_components,), optional
    means_init : array-like of shape (n_components, n_features), optional
    precisions_init : array-like, optional
        A start of your own, as :class:`GaussianMixture` takes it (shapes and
        checks are scikit-learn's ``GaussianMixture``'s): the fit starts from
        the responsibilities this Gaussian mixture gives the rows (one more
        pass), i.e. scikit-learn's ``BayesianGaussianMixture`` initialised
        with them. Those not given come from ``init_params``'s start, as in
        :class:`GaussianMixture`. With all three given every restart is the
        same, so one is run.
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}, \
default="dirichlet_process"
        The prior on the weights: a (truncated, stick-breaking) Dirichlet
        process, or a Dirichlet distribution.
    weight_concentration_prior : float, optional
        Its concentration (gamma_0); default 1 / n_components. Smaller values
        leave more weight on fewer components.
    mean_precision_prior : float, optional
        Precision of the means' prior (beta_0); default 1.
    mean_prior : array-like of shape (n_features,), optional
        The means' prior mean; default the data's mean.
    degrees_of_freedom_prior : float, optional
        Degrees of freedom of the precisions' Wishart prior (nu_0); default
        n_features; more than n_features - 1.
    covariance_prior : float or array-like, optional
        The covariance prior: (n_features, n_features) for full and tied,
        (n_features,) for diag, a float for spherical; default the data's
        covariance (``np.cov``, ``np.var(ddof=1)``, or its mean).
    random_state, warm_start, verbose, verbose_interval
        As for :class:`GaussianMixture`.
    forgetting_factor : float in (0, 1), optional
        ``partial_fit``: the past's weight is multiplied by it for every unit
        of row weight that arrives (a memory of about 1 / (1 - f) rows);
        None: nothing is forgotten.
    chunk_size, dtype, scheduler, n_workers, checkpoint, restart, cache, storage_options
        streammix's own, as for :class:`GaussianMixture`.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        The expected weights, and the posterior's means and covariances
        (scikit-learn's normalised Wishart scale).
    weight_concentration_ : tuple of two ndarray or ndarray
        Posterior of the weights: the two Beta parameters of each stick
        (Dirichlet process), or the Dirichlet's concentrations.
    mean_precision_ : ndarray of shape (n_components,)
    degrees_of_freedom_ : ndarray of shape (n_components,), or float for tied
    weight_concentration_prior_, mean_precision_prior_, mean_prior_, \
degrees_of_freedom_prior_, covariance_prior_
        The priors used (given, or from the data).
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_, feature_names_in_

    Examples
    --------
    >>> import numpy as np
    >>> import streammix as sm
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (300, 2))])
    >>> bgm = sm.BayesianGaussianMixture(6, random_state=0, max_iter=500).fit(X)
    >>> int((bgm.weights_ > 0.01).sum())
    2
    """

    _model_scalars: ClassVar[dict] = {
        **BaseMixture._model_scalars, "weight_concentration_prior_": float,
        "mean_precision_prior_": float, "degrees_of_freedom_prior_": float}

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
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
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
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
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
    def _check_params(self, n_features):
        """Validate the parameters for data of ``n_features`` columns (ValueError),
        with scikit-learn's messages for the priors."""
        self._check_mixture_params()
        self._check_initial_params(n_features)
        factor = self.forgetting_factor
        if factor is not None and not (_is_number(factor) and 0 < factor < 1):
            raise ValueError(f"forgetting_factor must be None or in (0, 1), got {factor!r}")
        if self.weight_concentration_prior_type not in vb.PRIOR_TYPES:
            raise ValueError(f"weight_concentration_prior_type must be one of "
                             f"{vb.PRIOR_TYPES}, got {self.weight_concentration_prior_type!r}")
        for name in ("weight_concentration_prior", "mean_precision_prior"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value > 0):
                raise ValueError(f"{name} must be None or a finite number > 0, got {value!r}")
        dof = self.degrees_of_freedom_prior
        if dof is not None:
            if not _is_number(dof):
                raise ValueError(f"degrees_of_freedom_prior must be None or a number, got "
                                 f"{dof!r}")
            if dof <= n_features - 1.0:
                raise ValueError(f"The parameter 'degrees_of_freedom_prior' should be greater "
                                 f"than {n_features - 1}, but got {dof:.3f}.")
        if self.mean_prior is not None:
            self._prior_array("mean_prior", "'means'", (n_features,))
        if self.covariance_prior is not None:
            kind = self.covariance_type
            if kind == "spherical":
                if not (_is_number(self.covariance_prior) and self.covariance_prior > 0):
                    raise ValueError("covariance_prior must be a number > 0 for spherical, got "
                                     f"{self.covariance_prior!r}")
                return
            prior = self._prior_array("covariance_prior", f"'{kind} covariance_prior'",
                                      vb.covariance_prior_shape(n_features, kind))
            check_definite(prior, f"'{kind} precision'", matrices=kind != "diag")

    def _prior_array(self, name, label, shape):
        value = self._param_array(name, label, shape)
        if not np.isfinite(value).all():
            raise ValueError(f"{name} must hold finite numbers")
        return value

    # -- fitting ----------------------------------------------------------
    def _priors(self, engine, source) -> vb.Priors:
        """The priors: given, or from the data's mean and covariance (one pass)."""
        n_features, kind = source.n_features, self.covariance_type
        data = None
        if self.mean_prior is None or self.covariance_prior is None:
            with engine.stage("priors: the data's mean and covariance", 1):
                data = engine.map_reduce(_moments, kind in ("full", "tied"), source)
        mean = data.mean if self.mean_prior is None else np.asarray(self.mean_prior, float)
        covariance = data.covariance(kind) if self.covariance_prior is None else \
            np.asarray(self.covariance_prior, dtype=np.float64)
        return vb.Priors(
            self.weight_concentration_prior_type,
            float(1.0 / self.n_components if self.weight_concentration_prior is None
                  else self.weight_concentration_prior),
            float(1.0 if self.mean_precision_prior is None else self.mean_precision_prior),
            mean,
            float(n_features if self.degrees_of_freedom_prior is None
                  else self.degrees_of_freedom_prior),
            np.asarray(covariance, dtype=np.float64))

    def _initial_runs(self, engine, source, do_init) -> list[Run]:
        self._fit_priors = self._priors(engine, source)
        if not do_init:
            return [Run(self._gaussian(), previous=self.lower_bound_,
                        extra={"posterior": self._posterior()})]
        seeds = restart_seeds(self._root_seed(engine), self.n_init)
        candidates = [(self.n_components, self.covariance_type)] * len(seeds)
        if any(v is not None for v in (self.weights_init, self.means_init,
                                       self.precisions_init)):
            starts = self._given_start(engine, source, seeds)
        else:
            starts = initial_statistics(engine, source, candidates, seeds, self.init_params,
                                        source.total_weight())
        runs = []
        for stats, shift in starts:
            posterior = self._m_step(stats, shift)
            runs.append(Run(self._estep(posterior), extra={"posterior": posterior}))
        return runs

    def _given_start(self, engine, source, seeds):
        """The statistics of the responsibilities the given Gaussian mixture (completed
        from ``init_params``' start, as GaussianMixture completes it) gives the rows."""
        gaussians = self._initial_params(engine, source, seeds, source.total_weight())
        with engine.stage("initialisation: responsibilities of the given start", 1):
            stats = batch_map_reduce(engine, source, _em_stats, gaussians)
        return [(s, g.shift()) for s, g in zip(stats, gaussians, strict=True)]

    def _m_step(self, stats, shift) -> vb.Posterior:
        kind = self.covariance_type
        _, xk, sk = gm.estimate_parameters(stats, shift, self.reg_covar, kind)
        self._check_precision(stats, sk, kind)
        return vb.update(stats.resp_sum + 10 * np.finfo(np.float64).eps, xk, sk,
                         self._fit_priors, kind)

    def _estep(self, posterior) -> gm.GaussianParams:
        return vb.estep_params(posterior, self.weight_concentration_prior_type,
                               self.covariance_type)

    def _em_update(self, run, stats):
        """The variational M-step, and the lower bound with the pass's entropy."""
        entropy = vb.entropy(stats, run.params)
        posterior = self._m_step(stats, run.params.shift())
        bound = vb.lower_bound(entropy, posterior, self._fit_priors, self.covariance_type)
        run.extra["posterior"] = posterior
        return self._estep(posterior), bound, abs(bound - run.previous) < self.tol

    def _set_fitted(self, best, best_bound, dtype=np.float64):
        super()._set_fitted(best, best_bound, dtype)  # weights_ etc. are set again below
        self._set_posterior(best.extra["posterior"], self._fit_priors, dtype)
        del self._fit_priors

    def _set_posterior(self, posterior: vb.Posterior, priors: vb.Priors, dtype):
        """scikit-learn's attributes, types and shapes, from the posterior and priors."""
        kind = self.covariance_type
        concentration = posterior.weight_concentration.astype(dtype)
        if self.weight_concentration_prior_type == "dirichlet_process":
            a, b = concentration.astype(np.float64)
            weights = a / (a + b) * np.hstack((1, np.cumprod(b / (a + b))[:-1]))
            self.weight_concentration_ = (concentration[0], concentration[1])
        else:
            weights = concentration.astype(np.float64)
            self.weight_concentration_ = concentration
        self.weights_ = (weights / weights.sum()).astype(dtype)
        self.mean_precision_ = posterior.mean_precision.astype(dtype)
        self.means_ = posterior.means.astype(dtype)
        dof = posterior.degrees_of_freedom
        self.degrees_of_freedom_ = float(dof[0]) if kind == "tied" else dof.astype(dtype)
        self.covariances_ = posterior.covariances.astype(dtype)
        self.precisions_cholesky_ = posterior.precisions_cholesky.astype(dtype)
        self.precisions_ = gm.precisions_from_cholesky(posterior.precisions_cholesky,
                                                       kind).astype(dtype)
        self.weight_concentration_prior_ = priors.weight_concentration
        self.mean_precision_prior_ = priors.mean_precision
        self.mean_prior_ = priors.mean.astype(dtype)
        self.degrees_of_freedom_prior_ = priors.degrees_of_freedom
        self.covariance_prior_ = float(priors.covariance) if kind == "spherical" else \
            priors.covariance.astype(dtype)

    def _posterior(self) -> vb.Posterior:
        """The fitted posterior, in float64."""
        self._check_fitted()
        k = self.n_components
        return vb.Posterior(
            np.asarray(self.weight_concentration_, dtype=np.float64),
            np.asarray(self.mean_precision_, dtype=np.float64),
            np.asarray(self.means_, dtype=np.float64),
            np.broadcast_to(np.asarray(self.degrees_of_freedom_, dtype=np.float64), (k,)).copy(),
            np.asarray(self.covariances_, dtype=np.float64),
            np.asarray(self.precisions_cholesky_, dtype=np.float64))

    # -- using the model --------------------------------------------------
    def _gaussian(self) -> gm.GaussianParams:
        """The variational density: scikit-learn's ``_estimate_weighted_log_prob``."""
        return self._estep(self._posterior())

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the posterior with the mini-batches of ``X``: streaming variational Bayes.

        Each chunk of ``X`` is one mini-batch. Its responsibilities under the
        current posterior give its statistics, which are added to those the
        posterior implies (Broderick et al. 2013, "Streaming variational
        Bayes"): the posterior after n rows is the one of a fit on all of them
        at once, as far as one pass of local updates allows. With
        ``forgetting_factor`` f, the past's weight is multiplied by f for
        every unit of row weight that arrives (a memory of about 1 / (1 - f)
        rows), so the posterior tracks a drifting stream instead of
        hardening. The priors are those of the first fit. The first call on an
        unfitted model fits its first mini-batch as ``fit`` would; a fitted or
        loaded model continues. Statistics add up in float64.

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
        """One streaming-VB update: the posterior's statistics plus the batch's."""
        kind = self.covariance_type
        priors = self._priors_fitted()
        running, total = vb.implied_stats(self._posterior(), priors, kind, params.shift(),
                                          self.reg_covar)
        weight = stats.n_rows
        kept = total * (self.forgetting_factor ** weight if self.forgetting_factor else 1.0)
        blended = online.blend(running, stats, weight / (kept + weight))
        _, xk, sk = gm.estimate_parameters(blended, params.shift(), self.reg_covar, kind)
        nk = blended.resp_sum * (kept + weight) + 10 * np.finfo(np.float64).eps
        posterior = vb.update(nk, xk, sk, priors, kind)
        self._set_posterior(posterior, priors, self.means_.dtype)
        self.n_steps_ = getattr(self, "n_steps_", 0) + 1
        return self._estep(posterior)

    def _priors_fitted(self) -> vb.Priors:
        return vb.Priors(self.weight_concentration_prior_type,
                         float(self.weight_concentration_prior_),
                         float(self.mean_precision_prior_),
                         np.asarray(self.mean_prior_, dtype=np.float64),
                         float(self.degrees_of_freedom_prior_),
                         np.asarray(self.covariance_prior_, dtype=np.float64))

    def effective_components(self, threshold=EFFECTIVE_WEIGHT) -> np.ndarray:
        """Indices of the components whose weight exceeds ``threshold`` (default 1 %)."""
        self._check_fitted()
        return np.flatnonzero(np.asarray(self.weights_) > threshold)

    # -- files --------------------------------------------------------------
    def _model_arrays(self) -> dict:
        k, d, kind = self.n_components, self.n_features_in_, self.covariance_type
        dirichlet_process = self.weight_concentration_prior_type == "dirichlet_process"
        return {**super()._model_arrays(),
                "weight_concentration_": (2, k) if dirichlet_process else (k,),
                "mean_precision_": (k,), "degrees_of_freedom_": () if kind == "tied" else (k,),
                "mean_prior_": (d,), "covariance_prior_": vb.covariance_prior_shape(d, kind)}

    def _loaded(self):
        """scikit-learn's types for what a model file holds as arrays."""
        if self.weight_concentration_prior_type == "dirichlet_process":
            self.weight_concentration_ = tuple(np.asarray(self.weight_concentration_))
        if self.covariance_type == "tied":
            self.degrees_of_freedom_ = float(self.degrees_of_freedom_)
        if self.covariance_type == "spherical":
            self.covariance_prior_ = float(self.covariance_prior_)

    def _check_model(self):
        super()._check_model()
        d = self.n_features_in_
        positive = {"weight_concentration_": np.asarray(self.weight_concentration_),
                    "mean_precision_": self.mean_precision_,
                    "weight_concentration_prior_": self.weight_concentration_prior_,
                    "mean_precision_prior_": self.mean_precision_prior_}
        for name, value in positive.items():
            if np.min(value) <= 0:
                raise ValueError(f"attribute {name!r} must be positive")
        for name in ("degrees_of_freedom_", "degrees_of_freedom_prior_"):
            if np.min(getattr(self, name)) <= d - 1:
                raise ValueError(f"attribute {name!r} must be greater than {d - 1}")
        kind = self.covariance_type
        prior = np.asarray(self.covariance_prior_, dtype=np.float64)
        gm.check_covariances(prior if kind in ("full", "tied") else np.atleast_1d(prior)[None],
                             "tied" if kind in ("full", "tied") else "diag", "covariance_prior_")


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and \
        not isinstance(value, bool) and bool(np.isfinite(value))


__all__ = ["BayesianGaussianMixture", "EFFECTIVE_WEIGHT"]
