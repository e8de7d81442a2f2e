"""Model selection: a grid of Gaussian mixtures fitted together, sharing every pass."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from operator import add

import numpy as np

from ..core import gaussian as gm
from ..core import kmeans as km
from ..engine import Run, iterate, sample_rows
from ..engine.iterate import batch_map_reduce
from ..exceptions import ConvergenceWarning
from .base import restart_seeds
from .gaussian_mixture import GaussianMixture, initial_gaussians
from .kmeans import KMeans, initial_centers, resolve_init, run_lloyd
from .mixture import _em_stats, _log_lik_and_rows, best_run

CRITERIA = ("bic", "aic")


@dataclass
class Selection:
    """The result of :func:`select`.

    Attributes
    ----------
    table : list of dict
        One row per candidate: ``n_components``, ``covariance_type``, ``bic``,
        ``aic``, ``lower_bound``, ``n_iter``, ``converged``.
    models : list of GaussianMixture
        Every fitted candidate, in the order of ``table``.
    best_ : GaussianMixture
        The fitted candidate with the lowest criterion (the first on ties).
    criterion : str
    """

    table: list
    models: list
    best_: GaussianMixture
    criterion: str

    def __str__(self):
        lines = [f"{'k':>4} {'covariance':<10} {'BIC':>14} {'AIC':>14} {'iter':>5} converged"]
        for row in self.table:
            mark = " *" if (row["n_components"], row["covariance_type"]) == (
                self.best_.n_components, self.best_.covariance_type) else ""
            lines.append(f"{row['n_components']:>4} {row['covariance_type']:<10} "
                         f"{row['bic']:>14.2f} {row['aic']:>14.2f} {row['n_iter']:>5} "
                         f"{row['converged']}{mark}")
        return "\n".join(lines)

#: Rows of the silhouette sample of ``select_kmeans``, by default.
SILHOUETTE_SAMPLE = 2000


def select(X, n_components=range(1, 11), covariance_types=gm.COVARIANCE_TYPES,
           criterion="bic", **params) -> Selection:
    """Fit every (n_components, covariance_type) candidate and pick the best by BIC or AIC.

    All candidates (and their ``n_init`` restarts) run as one batch: the
    initialisation passes, every EM pass and the final criterion pass are
    shared, so the data is read once per iteration whatever the grid's size.
    The criteria equal scikit-learn's ``bic(X)`` / ``aic(X)`` of each fitted
    candidate.

    Parameters
    ----------
    X : any input streammix reads
    n_components : iterable of int, default=range(1, 11)
    covariance_types : iterable of str, default=all four
    criterion : {"bic", "aic"}, default="bic"
    **params
        Other :class:`GaussianMixture` parameters (``tol``, ``max_iter``,
        ``n_init``, ``init_params``, ``random_state``, ``checkpoint``, ...).

    Returns
    -------
    Selection

    Examples
    --------
    >>> import numpy as np
    >>> import streammix as sm
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (300, 2))])
    >>> result = sm.select(X, n_components=range(1, 4), covariance_types=["full", "diag"],
    ...                    random_state=0)
    >>> result.best_.n_components
    2
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    for name in ("n_components", "covariance_type", "weights_init", "means_init",
                 "precisions_init", "warm_start"):
        if name in params:
            raise ValueError(f"{name} cannot be set for a model-selection grid")
    kinds = list(dict.fromkeys(covariance_types))
    ks = sorted({int(k) for k in n_components})
    template = GaussianMixture(**params)
    for kind in kinds:
        if kind not in gm.COVARIANCE_TYPES:
            raise ValueError(f"covariance type must be one of {gm.COVARIANCE_TYPES}, got {kind!r}")
    if not ks or ks[0] < 1:
        raise ValueError("n_components must hold integers >= 1")
    grid = [(k, kind) for kind in kinds for k in ks]
    source = template._source(X)
    template._check_params(source.n_features)
    n_rows = source.n_rows
    if n_rows < max(2, ks[-1]):
        raise ValueError(f"Expected n_samples >= n_components but got n_components = {ks[-1]}, "
                         f"n_samples = {n_rows}")
    n_init = template.n_init
    candidates = [c for c in grid for _ in range(n_init)]
    with template._fit_engine(source, extra={"select": grid, "criterion": criterion}) as engine:
        # Each candidate's restarts get the seeds a standalone fit of it gets, so that
        # clone(best_).fit(X) is best_ (not seeds that depend on the place in the grid).
        root = template._root_seed(engine)
        seeds = [seed for _ in grid for seed in restart_seeds(root, n_init)]
        starts = initial_gaussians(engine, source, candidates, seeds, template.init_params,
                                   template.reg_covar, source.total_weight())
        runs = [Run(gm.GaussianParams(w, m, gm.precision_cholesky(c, kind), kind, c))
                for (w, m, c), (_, kind) in zip(starts, candidates, strict=True)]
        iterate(engine, source, runs, step=_em_stats, update=template._em_update,
                max_iter=template.max_iter)
        finals = [best_run(runs[i : i + n_init], template.max_iter)
                  for i in range(0, len(runs), n_init)]
        log_liks = batch_map_reduce(engine, source, _log_lik_and_rows,
                                    [run.params for run, _ in finals], add)
    table, models = [], []
    for (k, kind), (run, bound), (log_lik, total) in zip(grid, finals, log_liks, strict=True):
        n_params = gm.n_parameters(k, source.n_features, kind)
        table.append({"n_components": k, "covariance_type": kind,
                      "bic": -2 * log_lik + n_params * math.log(total),
                      "aic": -2 * log_lik + 2 * n_params, "lower_bound": float(bound),
                      "n_iter": run.n_iter, "converged": bool(run.converged)})
        model = GaussianMixture(**params, n_components=k, covariance_type=kind)
        model._set_features(source)
        with warnings.catch_warnings():  # the table says which candidates converged
            warnings.simplefilter("ignore", ConvergenceWarning)
            model._set_fitted(run, bound, source.dtype)
        models.append(model)
    best = int(np.argmin([row[criterion] for row in table]))
    return Selection(table, models, models[best], criterion)


@dataclass
class KMeansSelection:
    """The result of :func:`select_kmeans`: inertia (the elbow) and silhouette per k.

    ``table`` rows hold ``n_clusters``, ``inertia``, ``silhouette`` and
    ``n_iter``; ``best_`` is the model with the highest silhouette.
    """

    table: list
    models: list
    best_: KMeans
    sample_size: int

    def __str__(self):
        lines = [f"{'k':>4} {'inertia':>16} {'silhouette':>11} {'iter':>5}"]
        for row in self.table:
            mark = " *" if row["n_clusters"] == self.best_.n_clusters else ""
            lines.append(f"{row['n_clusters']:>4} {row['inertia']:>16.6g} "
                         f"{row['silhouette']:>11.4f} {row['n_iter']:>5}{mark}")
        return "\n".join(lines)


def select_kmeans(X, n_clusters=range(2, 11), *, sample_size=SILHOUETTE_SAMPLE,
                  **params) -> KMeansSelection:
    """k-means for every k, sharing the passes; inertia per k and the silhouette of each.

    The silhouette is quadratic in the rows, so it is computed on a uniform,
    seeded sample of ``sample_size`` rows (``random_state`` seeds it). All k
    run as one batch of Lloyd iterations.

    Examples
    --------
    >>> import numpy as np
    >>> import streammix as sm
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.3, (200, 2)) for c in (0, 4, 8)])
    >>> sm.select_kmeans(X, n_clusters=range(2, 6), random_state=0).best_.n_clusters
    3
    """
    ks = sorted({int(k) for k in n_clusters})
    if not ks or ks[0] < 2:
        raise ValueError("n_clusters must hold integers >= 2 (the silhouette needs two)")
    if "n_clusters" in params:
        raise ValueError("n_clusters cannot be set for a model-selection grid")
    template = KMeans(**params, n_clusters=ks[-1])
    source = template._source(X)
    n_init = template._check_params(source.n_features)
    if source.n_rows < ks[-1]:
        raise ValueError(f"n_samples={source.n_rows} should be >= n_clusters={ks[-1]}.")
    init = template.init
    with template._fit_engine(source, extra={"select_kmeans": ks}) as engine:
        # Each k's restarts get the seeds a standalone KMeans(k) gets: clone(best_).fit(X)
        # is best_. The silhouette sample has a seed of its own, apart from those.
        root = template._root_seed(engine)
        sample_seed = np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, 2**32 - 1))
        ks_batch = [k for k in ks for _ in range(n_init)]
        seeds = [seed for _ in ks for seed in restart_seeds(root, n_init)]
        starts = initial_centers(engine, source, resolve_init(init, source), ks_batch, seeds,
                                 oversampling_factor=template.oversampling_factor,
                                 rounds=template.init_rounds)
        all_runs = run_lloyd(engine, source, starts, max_iter=template.max_iter,
                             tol=template.tol)
        # as KMeans.fit: the restart of lowest inertia, the first on ties
        runs = [min(all_runs[i : i + n_init], key=lambda run: run.extra["final_stats"].inertia)
                for i in range(0, len(all_runs), n_init)]
        sample = sample_rows(engine, source, sample_size, np.random.default_rng(sample_seed))
    table, models = [], []
    for k, run in zip(ks, runs, strict=True):
        model = KMeans(**params, n_clusters=k)
        model.cluster_centers_ = run.params.centers.astype(source.dtype)
        model.inertia_ = float(run.extra["final_stats"].inertia)
        model.n_iter_ = run.n_iter
        model._set_features(source)
        labels = km.nearest(sample, run.params.centers)[0]
        silhouette = km.silhouette_score(sample, labels) if len(np.unique(labels)) > 1 else -1.0
        table.append({"n_clusters": k, "inertia": model.inertia_, "silhouette": silhouette,
                      "n_iter": run.n_iter})
        models.append(model)
    best = int(np.argmax([row["silhouette"] for row in table]))
    return KMeansSelection(table, models, models[best], len(sample))
