"""Rows that may be scipy.sparse: the few operations the k-means maths needs on both kinds.

k-means accepts CSR blocks (TF-IDF with 100k columns, say) and never densifies
more than the handful of rows it keeps (seeds, far rows, samples).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def is_sparse(X) -> bool:
    return scipy.sparse.issparse(X)


def dense_rows(X, rows) -> np.ndarray:
    """Rows ``rows`` of ``X`` (dense or scipy.sparse) as a float64 NumPy array."""
    picked = X[rows]
    if is_sparse(picked):
        return picked.toarray().astype(np.float64)
    return np.array(picked, dtype=np.float64)


def row_sq_norms(X) -> np.ndarray:
    """Squared Euclidean norm of each row, in float64."""
    if is_sparse(X):
        squares = X.multiply(X)
        return np.asarray(squares.sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("nd,nd->n", X, X, dtype=np.float64)


def column_sums(X, squared=False) -> np.ndarray:
    """Per-feature sum of the rows (or of their squares), in float64."""
    if squared:
        X = X.multiply(X) if is_sparse(X) else X * X
    return np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
