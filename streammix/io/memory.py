"""In-memory inputs: NumPy arrays, pandas DataFrames and pyarrow Tables."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from ..exceptions import DataError
from .base import (
    SPARSE_CHUNK_BYTES,
    Chunk,
    Source,
    check_finite,
    check_has_features,
    chunk_rows_for,
    resolve_dtype,
)
from .parquet import arrow_to_array


def check_frame_columns(frame) -> None:
    """Every column of a pandas DataFrame must be numeric (nullable ones too, as in
    scikit-learn): a DataError naming the first column that is not."""
    from pandas.api.types import is_bool_dtype, is_complex_dtype, is_numeric_dtype

    for name, col_dtype in frame.dtypes.items():
        if not (is_numeric_dtype(col_dtype) or is_bool_dtype(col_dtype)) or \
                is_complex_dtype(col_dtype):
            raise DataError(f"is not numeric (type {col_dtype}); select numeric columns",
                            file="in-memory DataFrame", column=name)


def _pandas_to_array(frame, dtype):
    check_frame_columns(frame)
    names = [str(c) for c in frame.columns]
    native = np.float32 if all(np.dtype(t) == np.float32 for t in frame.dtypes) else None
    return frame.to_numpy(dtype=resolve_dtype(dtype, native)), names


class ArraySource(Source):
    """Slices of a 2-D array already in memory.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix
        A NumPy array, a pandas DataFrame, a pyarrow Table, or a sparse
        matrix (kept sparse, as CSR: blocks are CSR row slices).
    chunk_size : int, optional
        Rows per chunk.
    dtype : {"float64", "float32"} or None
        Working dtype of the arithmetic; None: float32 for float32 input, else float64.
    """

    in_memory = True

    def __init__(self, X, *, chunk_size=None, dtype=None):
        self._remember(X, chunk_size=chunk_size, dtype=dtype)
        self.feature_names = None
        self.name = "in-memory array"
        kind = type(X).__module__.split(".")[0]
        if kind == "pandas":
            array, names = _pandas_to_array(X, dtype)
            if all(isinstance(c, str) for c in X.columns):
                self.feature_names = tuple(names)
            self.name = "in-memory DataFrame"
        elif kind == "pyarrow":
            native = np.float32 if all(str(t) == "float" for t in X.schema.types) else None
            array = arrow_to_array(X, resolve_dtype(dtype, native), file="in-memory Table")
            self.feature_names = tuple(X.column_names)
            self.name = "in-memory Table"
        elif scipy.sparse.issparse(X):
            self.name = "in-memory sparse matrix"
            if X.dtype.kind not in "biuf":
                raise DataError(f"sparse matrix of type {X.dtype} is not numeric", file=self.name)
            array = scipy.sparse.csr_matrix(X).astype(resolve_dtype(dtype, X.dtype), copy=False)
        else:
            array = np.asarray(X)
            if array.dtype.kind not in "biuf":
                raise DataError(f"array of type {array.dtype} is not numeric", file=self.name)
            with np.errstate(over="ignore"):  # beyond float32's range: inf, reported below
                array = array.astype(resolve_dtype(dtype, array.dtype), copy=False)
        self.dtype = array.dtype
        if array.ndim != 2:
            raise DataError(
                f"expected a 2-D array (rows x features), got shape {array.shape}; "
                "reshape a single feature with X.reshape(-1, 1)",
                file=self.name,
            )
        self.array = array
        self.sparse = scipy.sparse.issparse(array)
        self._checked = set()  # row ranges already found finite
        self.n_features = array.shape[1]
        check_has_features(self.n_features, self.name)
        # A sparse row costs its stored values, not its width: size chunks by the mean
        # number of stored values per row.
        if self.sparse:
            self._chunk_rows = chunk_rows_for(max(1, array.nnz // max(1, array.shape[0])),
                                              self.dtype, chunk_size, SPARSE_CHUNK_BYTES)
        else:
            self._chunk_rows = chunk_rows_for(self.n_features, self.dtype, chunk_size)

    @property
    def n_rows(self) -> int:
        return self.array.shape[0]

    def plan(self):
        rows = self._chunk_rows
        return [
            Chunk(i, start, min(rows, self.n_rows - start), (start, min(start + rows, self.n_rows)))
            for i, start in enumerate(range(0, self.n_rows, rows))
        ]

    def checked_array(self):
        """The whole array, every row checked finite (a located DataError otherwise).

        For seedings that work on in-memory data directly, before any pass.
        """
        for chunk in self.plan():
            for _ in self.read_chunk(chunk):
                pass
        return self.array

    def read_chunk(self, chunk, payload=None):
        start, stop = chunk.key
        block = self.array[start:stop]
        if chunk.key not in self._checked:  # the rows do not change between passes
            check_finite(block, start, where=self.name, feature_names=self.feature_names)
            self._checked.add(chunk.key)
        yield start, block

    def fingerprint(self):
        import hashlib

        digest = hashlib.sha256()
        parts = (self.array.data, self.array.indices, self.array.indptr) if self.sparse else (
            self.array,)
        for part in parts:
            digest.update(np.ascontiguousarray(part).data)
        digest = digest.hexdigest()
        return {**super().fingerprint(), "sha256": digest}
