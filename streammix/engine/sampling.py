"""A uniform random sample of rows, drawn in one pass without holding the data."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from ..core.sparse import dense_rows, is_sparse, row_sq_norms
from ..exceptions import DataError
from .engine import Engine


def _pick_rows(wanted, block, start, weights=None):
    lo, hi = np.searchsorted(wanted, [start, start + block.shape[0]])
    local = wanted[lo:hi] - start
    # Sparse rows stay sparse: a sample of wide TF-IDF rows would not fit densified.
    rows = block[local].astype(np.float64) if is_sparse(block) else dense_rows(block, local)
    return rows, None if weights is None else weights[local]


def _concat(a, b):
    rows = scipy.sparse.vstack([a[0], b[0]], format="csr") if is_sparse(a[0]) else \
        np.concatenate([a[0], b[0]])
    return rows, None if a[1] is None else np.concatenate([a[1], b[1]])


def sample_weighted_rows(engine: Engine, source, n_samples: int, rng: np.random.Generator):
    """``(rows, weights)``: ``min(n_samples, n_rows)`` rows drawn uniformly without
    replacement, in row order, with their weights (None for unweighted data).

    Row counts come from the plan, so only the chunks' selected rows travel
    back. A uniform subset of this sample is itself a uniform sample of the
    data, which is what the seedings drawn from it rely on; with weighted
    rows, the seedings weigh the sampled rows by their weights.
    """
    n_rows = source.n_rows
    if n_samples >= n_rows:
        wanted = np.arange(n_rows)
    else:
        wanted = np.sort(rng.choice(n_rows, size=n_samples, replace=False))
    sample, weights = engine.map_reduce(_pick_rows, wanted, source, _concat)
    _check_squares(sample, wanted, source)
    return sample, weights


def rows_at(engine: Engine, source, rows) -> np.ndarray:
    """The rows at global positions ``rows``, dense float64, in the order given.

    Reads only the chunks that hold them (one small pass over those chunks).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, source.n_features))
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    plan = source.plan()
    starts = np.array([chunk.start for chunk in plan])
    holding = np.unique(np.searchsorted(starts, wanted, side="right") - 1)
    picked, _ = engine.map_reduce(_pick_rows, wanted, source, _concat,
                                  chunks=[plan[i] for i in holding])
    out = np.empty((len(rows), source.n_features))
    out[order] = dense_rows(picked, np.arange(len(rows)))
    return out


def sample_rows(engine: Engine, source, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The rows of :func:`sample_weighted_rows`, without their weights."""
    return sample_weighted_rows(engine, source, n_samples, rng)[0]


def _check_squares(sample, rows, source):
    """Seedings square the sampled rows: a row whose squares overflow is a located error."""
    with np.errstate(over="ignore"):
        bad = np.flatnonzero(~np.isfinite(row_sq_norms(sample)))
    if bad.size:
        i = int(bad[0])
        values = dense_rows(sample, [i])[0]
        row, column = int(rows[i]), int(np.argmax(np.abs(values)))
        plan = source.plan()
        chunk = plan[int(np.searchsorted([c.start for c in plan], row, side="right")) - 1]
        names = source.feature_names
        raise DataError(
            f"value {values[column]:g} is too large: its square leaves the float range "
            "(values beyond about 1e154); scale this column or remove the row",
            **source.locate(chunk, row), column=names[column] if names else column, row=row)
