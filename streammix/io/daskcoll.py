"""Dask arrays and dataframes as chunked sources.

Each chunk is one block of the collection along rows; the block's own task
graph is part of every pass's graph, so it is computed where it is needed and
never gathered on the client.
"""

from __future__ import annotations

import math

import numpy as np

from ..exceptions import DataError
from .base import (
    Chunk,
    Source,
    check_finite,
    check_has_features,
    check_numeric_dtype,
    resolve_dtype,
)


def is_dask_collection(X) -> bool:
    return type(X).__module__.startswith(("dask.array", "dask.dataframe", "dask_expr"))


class DaskSource(Source):
    """Row blocks of a Dask array or dataframe.

    Block lengths must be known to give every chunk its global row offset;
    when they are not (a dataframe, or an array with unknown chunks), they are
    computed once, which costs one pass over the collection.
    """

    def __init__(self, X, *, dtype=None):
        import dask.array as da

        self._remember(X, dtype=dtype)
        self.feature_names = None
        if hasattr(X, "columns"):  # a Dask dataframe
            for name, col_dtype in X.dtypes.items():
                check_numeric_dtype(col_dtype, column=name, file="dask dataframe")
            if all(isinstance(c, str) for c in X.columns):
                self.feature_names = tuple(X.columns)
            X = X.to_dask_array(lengths=True)
            self.name = "dask dataframe"
        else:
            self.name = "dask array"
            check_numeric_dtype(X.dtype, column="<array>", file=self.name)
        self.dtype = resolve_dtype(dtype, X.dtype)
        if X.ndim != 2:
            raise DataError(f"expected a 2-D array (rows x features), got {X.ndim} dimensions",
                            file=self.name)
        if any(math.isnan(c) for c in X.chunks[0]):
            X = X.compute_chunk_sizes()
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        self.array: da.Array = X
        self.n_features = X.shape[1]
        check_has_features(self.n_features, self.name)
        starts = np.cumsum([0, *X.chunks[0]])
        self._plan = [
            Chunk(i, int(starts[i]), int(n), i, f"{self.name} block {i}")
            for i, n in enumerate(X.chunks[0]) if n
        ]
        if not self._plan:
            raise DataError("has zero rows", file=self.name)
        self._blocks = X.to_delayed().ravel()

    def plan(self):
        return self._plan

    def dask_input(self, chunk):
        return self._blocks[chunk.key]

    def __getstate__(self):
        # Tasks carry only what read_chunk needs; the graph travels as task inputs.
        state = dict(self.__dict__)
        state.pop("array", None)
        state.pop("_blocks", None)
        return state

    def read_chunk(self, chunk, payload=None):
        with np.errstate(over="ignore"):  # beyond float32's range: inf, reported below
            block = np.asarray(payload).astype(self.dtype, copy=False)
        yield chunk.start, check_finite(block, chunk.start, where=chunk.where,
                                        feature_names=self.feature_names)
