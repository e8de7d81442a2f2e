"""Model selection: a grid of Gaussian mixtures fitted together, sharing every pass."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from operator import add

import numpy as np

from ..core import gaussian as gm
from ..core import kmeans as km
from ..engine import Run, iterate, sample_rows
from ..engine.iterate import batch_map_reduce
from ..engine.sampling import sample_weighted_rows
from ..exceptions import ConvergenceWarning, SelectionWarning
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
        One row per fitted candidate: ``n_components``, ``covariance_type``,
        ``bic``, ``aic``, ``lower_bound``, ``n_iter``, ``converged``.
    models : list of GaussianMixture
        Every fitted candidate, in the order of ``table``.
    best_ : GaussianMixture
        The fitted candidate with the lowest criterion (the first on ties).
    criterion : str
    seconds : float
        Wall-clock time of the whole selection (screening included).
    n_init : int
        Starts tried per candidate.
    screen_rows : int or None
        Rows of the sample the starts were screened on; None when they ran on
        all the data (data of at most ``screen_size`` rows, or ``screen_size=None``).
    skipped : list of tuple
        ``(n_components, covariance_type)`` of the candidates left out for having
        more free parameters than rows.
    """

    table: list
    models: list
    best_: GaussianMixture
    criterion: str
    seconds: float = float("nan")
    n_init: int = 1
    screen_rows: int | None = None
    skipped: list = field(default_factory=list)

    def __str__(self):
        lines = [f"{'k':>4} {'covariance':<10} {'BIC':>14} {'AIC':>14} {'iter':>5} converged"]
        for row in self.table:
            mark = " *" if (row["n_components"], row["covariance_type"]) == (
                self.best_.n_components, self.best_.covariance_type) else ""
            lines.append(f"{row['n_components']:>4} {row['covariance_type']:<10} "
                         f"{row['bic']:>14.2f} {row['aic']:>14.2f} {row['n_iter']:>5} "
                         f"{row['converged']}{mark}")
        where = (f"screened on {self.screen_rows} sampled rows, then fitted on all"
                 if self.screen_rows is not None else "on all rows")
        lines.append(f"{len(self.table)} candidates, {self.n_init} starts each ({where}) "
                     f"in {self.seconds:.2f} s")
        return "\n".join(lines)

#: Rows of the silhouette sample of ``select_kmeans``, by default.
SILHOUETTE_SAMPLE = 2000

#: Starts per candidate of ``select``, by default: one start often ends in a poor
#: optimum (scikit-learn's and Geron's model-selection examples use 10).
SELECT_N_INIT = 10

#: Rows of the seeded sample ``select`` screens the starts on, by default: enough to
#: rank starts, small enough that 10 starts cost little next to one pass over big data.
SCREEN_SIZE = 20_000


def _feasible(grid, n_features, n_rows, allow_overparameterized):
    """The candidates with no more free parameters than rows, and those left out."""
    if allow_overparameterized:
        return grid, []
    kept = [(k, kind) for k, kind in grid if gm.n_parameters(k, n_features, kind) <= n_rows]
    skipped = [c for c in grid if c not in kept]
    if skipped:
        names = ", ".join(f"{k} {kind} ({gm.n_parameters(k, n_features, kind)})"
                          for k, kind in skipped)
        if not kept:
            raise ValueError(f"every candidate has more free parameters than the {n_rows} "
                             f"rows: {names}; try fewer components or a simpler covariance "
                             "type (allow_overparameterized=True forces them)")
        # Such a model can fit the rows exactly: its BIC/AIC says nothing, yet often wins.
        warnings.warn(f"left out {len(skipped)} candidate(s) with more free parameters than "
                      f"the {n_rows} rows: {names}; allow_overparameterized=True forces them",
                      SelectionWarning, stacklevel=3)
    return kept, skipped


def _edge_warning(table, best, skipped=()):
    """Warn when the best k is the smallest or largest fitted for its covariance type."""
    kind = best["covariance_type"]
    ks = sorted(row["n_components"] for row in table if row["covariance_type"] == kind)
    k = best["n_components"]
    # Larger k left out for having more parameters than rows: the data, not the grid,
    # is the limit, and the left-out warning already says so; "widen upwards" would mislead.
    capped = any(other == kind and other_k > k for other_k, other in skipped)
    if len(ks) > 1 and k == ks[-1] and not capped:
        side = "largest"
    elif len(ks) > 1 and k == ks[0] and k > 1:
        side = "smallest"
    else:
        return
    way = "upwards" if side == "largest" else "downwards"
    warnings.warn(f"the best k ({k} {kind}) is the {side} tried: the grid may be too narrow, "
                  f"widen n_components (CLI: -k) {way}", SelectionWarning, stacklevel=3)


def _fit_grid(engine, source, template, grid, root):
    """Every candidate with ``template.n_init`` starts, all in one batch sharing the passes:
    ``[(best run, its lower bound)]``, one per candidate."""
    n_init = template.n_init
    candidates = [c for c in grid for _ in range(n_init)]
    # Each candidate's restarts get the seeds a standalone fit of it gets, so that
    # clone(model).fit(X) is that model (not seeds that depend on the place in the grid).
    seeds = [seed for _ in grid for seed in restart_seeds(root, n_init)]
    starts = initial_gaussians(engine, source, candidates, seeds, template.init_params,
                               template.reg_covar, source.total_weight())
    runs = [Run(gm.GaussianParams(w, m, gm.precision_cholesky(c, kind), kind, c))
            for (w, m, c), (_, kind) in zip(starts, candidates, strict=True)]
    iterate(engine, source, runs, step=_em_stats, update=template._em_update,
            max_iter=template.max_iter)
    return [best_run(runs[i : i + n_init], template.max_iter)
            for i in range(0, len(runs), n_init)]


def select(X, n_components=range(1, 11), covariance_types=gm.COVARIANCE_TYPES,
           criterion="bic", *, n_init=SELECT_N_INIT, screen_size=SCREEN_SIZE,
           allow_overparameterized=False, **params) -> Selection:
    """Fit every (n_components, covariance_type) candidate and pick the best by BIC or AIC.

    Each candidate gets ``n_init`` starts and keeps the best (one start often
    lands in a poor optimum, and then a wrong k wins). On data of more than
    ``screen_size`` rows the starts are screened on a seeded uniform sample of
    that many rows: every start is fitted there, each candidate keeps its best,
    and only that one is fitted on all the data, starting from the sample's
    fitted parameters. So the big data sees one run per candidate, and few
    iterations, whatever ``n_init``.

    All candidates run as one batch: the initialisation passes, every EM pass
    and the final criterion pass are shared, so the data is read once per
    iteration whatever the grid's size. The criteria equal scikit-learn's
    ``bic(X)`` / ``aic(X)`` of each fitted candidate, and every candidate equals
    a standalone :class:`GaussianMixture` fit with its parameters
    (``clone(model).fit(X)``): with ``n_init`` on small data, from the screened
    start (``weights_init``, ``means_init``, ``precisions_init``) on big data.

    Parameters
    ----------
    X : any input streammix reads
    n_components : iterable of int, default=range(1, 11)
    covariance_types : iterable of str, default=all four
    criterion : {"bic", "aic"}, default="bic"
    n_init : int, default=10
        Starts per candidate (seeds spread across the restarts as in ``fit``).
    screen_size : int or None, default=20000
        Rows of the sample the starts are screened on when the data has more;
        None runs all ``n_init`` starts on all the data (``n_init`` times the
        compute per pass).
    allow_overparameterized : bool, default=False
        Candidates with more free parameters than rows can fit the data
        exactly and then win on BIC/AIC for no good reason: by default they
        are left out with a :class:`~streammix.SelectionWarning` (a
        ``ValueError`` when no candidate is left). True fits them anyway.
    **params
        Other :class:`GaussianMixture` parameters (``tol``, ``max_iter``,
        ``init_params``, ``random_state``, ``checkpoint``, ...).

    Returns
    -------
    Selection

    Warns
    -----
    SelectionWarning
        When the best k is the largest (or the smallest above 1) fitted for its
        covariance type: the grid may be too narrow. When candidates were left
        out for having more free parameters than rows.

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
    clock = time.perf_counter()
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    for name in ("n_components", "covariance_type", "weights_init", "means_init",
                 "precisions_init", "warm_start"):
        if name in params:
            raise ValueError(f"{name} cannot be set for a model-selection grid")
    if screen_size is not None and (not isinstance(screen_size, int | np.integer)
                                    or screen_size < 2):
        raise ValueError(f"screen_size must be an integer >= 2 or None, got {screen_size!r}")
    kinds = list(dict.fromkeys(covariance_types))
    ks = sorted({int(k) for k in n_components})
    template = GaussianMixture(**params, n_init=n_init)
    for kind in kinds:
        if kind not in gm.COVARIANCE_TYPES:
            raise ValueError(f"covariance type must be one of {gm.COVARIANCE_TYPES}, got {kind!r}")
    if not ks or ks[0] < 1:
        raise ValueError("n_components must hold integers >= 1")
    source = template._source(X)
    template._check_params(source.n_features)
    n_rows = source.n_rows
    if n_rows < max(2, ks[-1]):
        raise ValueError(f"Expected n_samples >= n_components but got n_components = {ks[-1]}, "
                         f"n_samples = {n_rows}")
    grid, skipped = _feasible([(k, kind) for kind in kinds for k in ks], source.n_features,
                              n_rows, allow_overparameterized)
    screened = screen_size is not None and n_rows > screen_size
    extra = {"select": grid, "criterion": criterion,
             "screen_size": int(screen_size) if screened else None}
    with template._fit_engine(source, extra=extra) as engine:
        root = template._root_seed(engine)
        if not screened:
            finals = _fit_grid(engine, source, template, grid, root)
            models = [GaussianMixture(**params, n_init=n_init, n_components=k,
                                      covariance_type=kind) for k, kind in grid]
        else:
            models, finals = _screen_then_fit(engine, source, template, grid, root,
                                              int(screen_size), params)
        log_liks = batch_map_reduce(engine, source, _log_lik_and_rows,
                                    [run.params for run, _ in finals], add)
    table = []
    for (k, kind), model, (run, bound), (log_lik, total) in zip(grid, models, finals, log_liks,
                                                                 strict=True):
        n_params = gm.n_parameters(k, source.n_features, kind)
        table.append({"n_components": k, "covariance_type": kind,
                      "bic": -2 * log_lik + n_params * math.log(total),
                      "aic": -2 * log_lik + 2 * n_params, "lower_bound": float(bound),
                      "n_iter": run.n_iter, "converged": bool(run.converged)})
        model._set_features(source)
        with warnings.catch_warnings():  # the table says which candidates converged
            warnings.simplefilter("ignore", ConvergenceWarning)
            model._set_fitted(run, bound, source.dtype)
    best = int(np.argmin([row[criterion] for row in table]))
    _edge_warning(table, table[best], skipped)
    return Selection(table, models, models[best], criterion,
                     seconds=time.perf_counter() - clock, n_init=n_init,
                     screen_rows=int(screen_size) if screened else None, skipped=skipped)


def _screen_then_fit(engine, source, template, grid, root, screen_size, params):
    """Screen every candidate's starts on a seeded sample, then fit each candidate's best
    on all the data from there: ``(models, [(run, lower bound)])``.

    Each model carries its screened start as ``weights_init``, ``means_init`` and
    ``precisions_init`` (and ``n_init=1``), so ``clone(model).fit(X)`` is that model.
    """
    # The sample's seed is apart from the restarts' seeds (the spawn key no fit uses).
    sample_seed = np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, 2**32 - 1))
    sample, weights = sample_weighted_rows(engine, source, screen_size,
                                           np.random.default_rng(sample_seed))
    # The sample is in memory: local threads, and nothing of it in the checkpoint (the
    # screen is cheap and deterministic, so a resumed selection simply redoes it).
    local = {**params, "checkpoint": None, "restart": False, "scheduler": "threads",
             "chunk_size": None, "cache": False}
    screener = GaussianMixture(**local, n_init=template.n_init)
    sample_source = screener._source(np.asarray(sample), sample_weight=weights)
    with screener._engine() as sample_engine:
        screens = _fit_grid(sample_engine, sample_source, screener, grid, root)
    models, runs = [], []
    for (k, kind), (screen, _) in zip(grid, screens, strict=True):
        start = screen.params
        model = GaussianMixture(
            **params, n_init=1, n_components=k, covariance_type=kind,
            weights_init=start.weights, means_init=start.means,
            precisions_init=gm.precisions_from_cholesky(start.precisions_cholesky, kind))
        models.append(model)
        runs.append(Run(model._override(None, None, None)))  # exactly as its own fit starts
    iterate(engine, source, runs, step=_em_stats, update=template._em_update,
            max_iter=template.max_iter)
    return models, [best_run([run], template.max_iter) for run in runs]


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
