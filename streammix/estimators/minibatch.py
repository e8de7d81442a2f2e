"""Mini-batch k-means streaming over chunks, with ``partial_fit`` for streams."""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import ClassVar

import numpy as np

from ..core import kmeans as km
from ..core import minibatch as mb
from ..engine import ChunkGroup
from ..engine.sampling import sample_weighted_rows
from ..io import ArraySource
from .base import check_random_state
from .kmeans import INITS, CentersModel, check_centers, initial_centers
from .persistence import register

#: Chunks a worker gathers for one step (at most): its mini-batches mix rows from
#: that many random places of the data.
WINDOW_CHUNKS = 8


@register
class MiniBatchKMeans(CentersModel):
    """Mini-batch k-means (Sculley 2010) over any source, never holding the dataset.

    ``fit`` streams over the chunks in a seeded random order, epoch after
    epoch. A step gives each worker a window of up to 8 chunks drawn at
    random; it gathers their rows, shuffles them, and runs them as consecutive
    mini-batches of ``batch_size`` with per-centre learning rates, and the step
    merges the per-centre statistics. Batches therefore mix rows from several
    places of the data, so data stored sorted (by time, by group) fits as well
    as shuffled data, and every chunk is still read once an epoch. With one
    worker this is exactly sequential mini-batch k-means over the shuffled
    windows; with several, the workers' batches of a step are combined as one
    larger batch. Starving centres are moved onto random rows, as in
    scikit-learn.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"auto", "k-means++", "k-means||", "random"}, callable or array, default="auto"
        ``"auto"`` and ``"k-means++"`` seed on an in-memory sample of
        ``init_size`` rows; ``"k-means||"`` seeds on all the data (6 passes).
    max_iter : int, default=100
        Maximum number of epochs (passes over the data).
    batch_size : int, default=1024
    verbose : int, default=0
    compute_labels : bool, default=True
        After ``fit``, compute ``inertia_`` (one pass) and, for in-memory input, ``labels_``.
    random_state : int, Generator or None
    tol : float, default=0.0
        Stop when the squared centre change per mini-batch (a step's change
        over its batches) is at most ``tol`` times the mean feature variance
        (estimated on the initialisation sample).
    max_no_improvement : int or None, default=10
        Stop after this many mini-batches without improvement of the smoothed
        inertia (checked after each step).
    init_size : int, optional
        Rows of the initialisation sample (default ``3 * batch_size``).
    n_init : "auto" or int, default="auto"
        Initialisations tried on the sample (best inertia wins); "auto" is 1
        for k-means++/k-means||/arrays, 3 otherwise.
    reassignment_ratio : float, default=0.01
        A centre whose count is below this fraction of the largest is re-seeded.
    chunk_size : int, optional
        Rows per chunk; default ``batch_size``, so that a window of chunks is that
        many batches.
    dtype, scheduler, n_workers, checkpoint, restart, cache, storage_options
        As for :class:`streammix.GaussianMixture`. The checkpoint of ``fit``
        is written after every step and holds the centres, counts, the epoch's
        chunk order and the cursor in it; ``partial_fit`` keeps its state in
        the estimator (``save`` it).

    Attributes
    ----------
    cluster_centers_, labels_, inertia_, n_iter_, n_steps_, n_features_in_,
    feature_names_in_

    Examples
    --------
    >>> import numpy as np
    >>> import streammix as sm
    >>> rng = np.random.default_rng(0)
    >>> model = sm.MiniBatchKMeans(n_clusters=2, random_state=0)
    >>> for _ in range(20):  # a stream of small batches
    ...     batch = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(8, 1, (50, 2))])
    ...     model = model.partial_fit(batch)
    >>> sorted(np.round(model.cluster_centers_[:, 0]).tolist())
    [0.0, 8.0]
    """

    #: Model-file attributes held in the metadata, by kind (see ``persistence``);
    #: the private ones let ``partial_fit`` continue a loaded model exactly.
    _model_scalars: ClassVar[dict] = {"inertia_": float, "n_iter_": int, "n_steps_": int,
                                      "n_features_in_": int, "feature_names_in_": list[str],
                                      "_n_since_last_reassign": int, "_entropy": int}

    def __init__(self, n_clusters=8, *, init="auto", max_iter=100, batch_size=1024, verbose=0,
                 compute_labels=True, random_state=None, tol=0.0, max_no_improvement=10,
                 init_size=None, n_init="auto", reassignment_ratio=0.01, chunk_size=None,
                 dtype=None, scheduler=None, n_workers=None, checkpoint=None,
                 restart=False, cache="auto", storage_options=None):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.checkpoint = checkpoint
        self.restart = restart
        self.cache = cache
        self.storage_options = storage_options

    def _chunk_rows(self):
        # A chunk is one mini-batch unless chunk_size says otherwise: a worker's
        # window of chunks is then that many batches, mixed from as many places.
        return self.chunk_size or self.batch_size

    # -- checks and initialisation ---------------------------------------
    def _check_params(self, n_features=None):
        """Validate the parameters (with ``n_features``, an array ``init``'s shape too);
        returns the number of initialisations."""
        self._check_common_params()
        for name in ("n_clusters", "batch_size", "max_iter"):
            self._check_integer(name, 1)
        for name in ("max_no_improvement", "init_size"):
            if getattr(self, name) is not None:
                self._check_integer(name, 1)
        if n_features is not None:
            self._check_init_shape(n_features)
        if isinstance(self.init, str) and self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, a callable or an array")
        self._check_number("tol")
        self._check_number("reassignment_ratio")
        if self.n_init != "auto":
            self._check_integer("n_init", 1)
        if self.n_init == "auto":
            return 3 if (isinstance(self.init, str) and self.init == "random") or callable(
                self.init) else 1
        if not isinstance(self.init, str) and not callable(self.init):
            if self.n_init != 1:
                warnings.warn("Explicit initial center position passed: performing only one "
                              f"init in MiniBatchKMeans instead of n_init={self.n_init}.",
                              RuntimeWarning, stacklevel=3)
            return 1
        return int(self.n_init)

    def _check_init_shape(self, n_features):
        """An array ``init`` must be (n_clusters, n_features): scikit-learn's error if not."""
        if not isinstance(self.init, str) and not callable(self.init):
            check_centers(self.init, self.n_clusters, n_features)

    def _initialise(self, engine, source, sample, weights, seeds):
        """Best of the initialisations by (weighted) inertia on ``sample``; resets the counts."""
        if source.n_rows < self.n_clusters:
            raise ValueError(f"n_samples={source.n_rows} should be >= "
                             f"n_clusters={self.n_clusters}.")
        init = "k-means++" if isinstance(self.init, str) and self.init == "auto" else self.init
        if isinstance(init, str) and init == "k-means||":
            candidates = initial_centers(engine, source, init, self.n_clusters, seeds)
        else:
            on_sample = ArraySource(sample) if weights is None else \
                ArraySource(sample).with_weights(weights)
            candidates = initial_centers(engine, on_sample, init, self.n_clusters, seeds)
        costs = [km.min_sq_distances(sample, c) @ (np.ones(sample.shape[0]) if weights is None
                                                   else weights) for c in candidates]
        self.cluster_centers_ = np.array(candidates[int(np.argmin(costs))], dtype=np.float64)
        self._counts = np.zeros(self.n_clusters)
        self._n_since_last_reassign = 0
        self.n_steps_ = 0

    def _step_seed(self, salt=0) -> int:
        """A seed for step ``n_steps_``: fixed by random_state, the same after save/load."""
        return int(np.random.SeedSequence([self._entropy, self.n_steps_, salt])
                   .generate_state(1)[0])

    def _step(self, engine, source, chunks=None):
        """One mini-batch step over ``chunks`` (default all of ``source``); returns stats."""
        self.cluster_centers_ = np.asarray(self.cluster_centers_, dtype=np.float64)
        spec = (self.cluster_centers_, self._counts, int(self.batch_size), self._step_seed())
        stats = engine.map_reduce(mb.run_batches, spec, source, chunks=chunks)
        self.cluster_centers_, self._counts, shift = mb.apply_step(
            self.cluster_centers_, self._counts, stats)
        self._n_since_last_reassign += stats.n_rows
        if self.reassignment_ratio > 0 and (
                (self._counts == 0).any() or self._n_since_last_reassign >= 10 * self.n_clusters):
            self._n_since_last_reassign = 0
            rng = np.random.default_rng(self._step_seed(salt=1))
            self.cluster_centers_, self._counts, moved = mb.reassign_starving(
                self.cluster_centers_, self._counts, stats, self.reassignment_ratio, rng)
            if moved and self.verbose:
                print(f"[MiniBatchKMeans] Reassigning {moved} cluster centers.")
        self.n_steps_ += 1
        return stats, shift

    # -- fitting -----------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Stream over ``X`` in mini-batches for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like, scipy.sparse matrix, Dask collection, Zarr array, or path
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each row (its share in the centres' running means), as
            in scikit-learn; for Parquet, ``read_parquet(weight_column=)``.

        Returns
        -------
        self
        """
        n_init = self._check_params()
        source = self._source(X, sample_weight=sample_weight)
        self._check_init_shape(source.n_features)
        n_rows = source.n_rows
        init_size = self.init_size
        if init_size is not None and init_size < self.n_clusters:
            warnings.warn(f"init_size={init_size} should be larger than n_clusters="
                          f"{self.n_clusters}. Setting it to min(3*n_clusters, n_samples)",
                          RuntimeWarning, stacklevel=2)
            init_size = 3 * self.n_clusters
        init_size = min(n_rows, max(init_size or 3 * self.batch_size, 3 * self.n_clusters))
        with self._fit_engine(source) as engine:
            root = self._root_seed(engine)
            self._entropy = root.entropy
            sample_seed, order_seed, *init_seeds = root.spawn(2 + n_init)
            sample, weights = sample_weighted_rows(engine, source, init_size,
                                                   np.random.default_rng(sample_seed))
            self._initialise(engine, source, sample, weights, init_seeds)
            tol = self.tol * km.mean_variance_of(sample)  # unweighted, as scikit-learn's
            self._stream(engine, source, order_seed, tol)
            if self.compute_labels:
                self._final_labels(engine, source)
        self.cluster_centers_ = self.cluster_centers_.astype(source.dtype)  # as scikit-learn
        self._set_features(source)
        return self

    def _stream(self, engine, source, order_seed, tol):
        """Epochs of steps over the chunks in a seeded order; resumable step by step.

        A step gives each worker a window of chunks drawn at random (the
        epoch's permutation); the worker gathers their rows, shuffles them and
        runs them as consecutive mini-batches. So a batch mixes rows from
        ``window`` places of the data: data stored sorted (by time, by group)
        still gives near-uniform batches, while every chunk is read once an
        epoch.
        """
        plan, n_rows = source.plan(), source.n_rows
        width = engine.parallelism
        cursor = {"epoch": 0, "position": 0, "rows": 0, "order": None, "ewa": None,
                  "best": math.inf, "stale": 0, "width": width,
                  "window": max(1, min(WINDOW_CHUNKS, len(plan) // width)), "done": False,
                  "rng": np.random.default_rng(order_seed).bit_generator.state}
        def state():
            return {"cursor": cursor, "centers": self.cluster_centers_, "counts": self._counts,
                    "n_steps": self.n_steps_, "since_reassign": self._n_since_last_reassign}

        loop = engine.checkpoint.loop(template=state()) if engine.checkpoint else \
            nullcontext((None, None))
        with loop as (saved, save):
            if saved is not None:
                cursor = saved["cursor"]
                self.cluster_centers_, self._counts = saved["centers"], saved["counts"]
                self.n_steps_ = saved["n_steps"]
                self._n_since_last_reassign = saved["since_reassign"]
            rng = np.random.default_rng()
            rng.bit_generator.state = cursor["rng"]
            while not cursor["done"] and cursor["epoch"] < self.max_iter:
                if cursor["order"] is None:
                    cursor["order"] = rng.permutation(len(plan))
                    cursor["rng"] = rng.bit_generator.state
                at, window = cursor["position"], cursor["window"]
                drawn = cursor["order"][at : at + cursor["width"] * window]
                groups = [ChunkGroup(tuple(plan[i] for i in drawn[first : first + window]))
                          for first in range(0, len(drawn), window)]
                stats, shift = self._step(engine, source, groups)
                cursor["position"] += len(drawn)
                cursor["rows"] += stats.n_rows
                cursor["done"] = self._converged(cursor, stats, shift, n_rows, tol)
                if cursor["position"] >= len(plan) or cursor["done"]:
                    cursor.update(epoch=cursor["epoch"] + 1, position=0, order=None)
                if save is not None:
                    save(state())
        self.n_iter_ = cursor["epoch"]
        # scikit-learn's count: mini-batches of batch_size rows, whatever the workers.
        self.n_steps_ = cursor["rows"] // self.batch_size

    def _converged(self, cursor, stats, shift, n_rows, tol):
        """scikit-learn's stopping rules: small centre change, or no smoothed improvement."""
        batch_inertia = stats.inertia / stats.n_rows
        alpha = min(1.0, stats.n_rows * 2.0 / (n_rows + 1))
        ewa = cursor["ewa"]
        ewa = cursor["ewa"] = batch_inertia if ewa is None else ewa * (1 - alpha) + \
            batch_inertia * alpha
        # scikit-learn's verbose lines (on stdout); a step here is rows / batch_size of its.
        step, n_steps = (cursor["rows"] + stats.n_rows) // self.batch_size, \
            self.max_iter * n_rows // self.batch_size
        if self.verbose:
            print(f"Minibatch step {step}/{n_steps}: mean batch inertia: {batch_inertia}, "
                  f"ewa inertia: {ewa}")
        if ewa < cursor["best"]:
            cursor["best"], cursor["stale"] = ewa, 0
        else:  # counted in batches, as scikit-learn counts them
            cursor["stale"] += max(1, stats.n_rows // self.batch_size)
        # scikit-learn compares one batch's change; a step holds several batches
        if tol > 0 and shift / max(1, stats.n_rows // self.batch_size) <= tol:
            if self.verbose:
                print(f"Converged (small centers change) at step {step}/{n_steps}")
            return True
        if self.max_no_improvement is not None and cursor["stale"] >= self.max_no_improvement:
            if self.verbose:
                print(f"Converged (lack of improvement in inertia) at step {step}/{n_steps}")
            return True
        return False

    def _final_labels(self, engine, source):
        stats = engine.map_reduce(km.lloyd_stats, km.LloydParams(self.cluster_centers_), source)
        self.inertia_ = float(stats.inertia)
        self._set_labels(engine, source)

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centres with the rows of ``X`` (one step), for streams.

        The first call initialises the centres on ``X`` (which needs at least
        ``n_clusters`` rows). Rows are taken as consecutive mini-batches of
        ``batch_size``.

        Returns
        -------
        self
        """
        first = not hasattr(self, "cluster_centers_")
        n_init = self._check_params()
        source = self._source(X, fitted=not first, sample_weight=sample_weight)
        self._check_init_shape(source.n_features)
        with self._engine() as engine:
            if first:
                root = check_random_state(self.random_state)
                self._entropy = root.entropy
                seeds = root.spawn(n_init)
                if source.in_memory:
                    data, weights = source.checked_array(), source.sample_weight
                else:
                    data, weights = sample_weighted_rows(
                        engine, source, max(3 * self.batch_size, 3 * self.n_clusters),
                        np.random.default_rng(seeds[0]))
                self._initialise(engine, source, data, weights, seeds)
                self._set_features(source)
                self.n_iter_ = 0
            self._step(engine, source)
            if self.compute_labels:
                self._final_labels(engine, source)
        self.cluster_centers_ = self.cluster_centers_.astype(source.dtype)
        return self

    def _model_arrays(self) -> dict:
        """Fitted arrays of a model file, with their shapes."""
        return {**super()._model_arrays(), "_counts": (self.n_clusters,)}

    def _check_model(self):
        """Check loaded attributes beyond their types and shapes."""
        super()._check_model()
        if self._counts.min() < 0:
            raise ValueError("attribute '_counts' must be >= 0")
