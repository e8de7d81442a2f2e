"""Zarr (v3 library) 2-D arrays as chunked sources, chunked along rows."""

from __future__ import annotations

import os

import numpy as np

from ..exceptions import DataError
from .base import (
    Chunk,
    Source,
    check_finite,
    check_has_features,
    check_numeric_dtype,
    chunk_rows_for,
    resolve_dtype,
    split_rows,
)
from .storage import Storage, is_url


def _open(path, storage: Storage | None = None):
    import zarr

    if storage is None and not os.path.exists(path):
        raise DataError("no such Zarr store", file=path)
    try:
        if storage is None:
            return zarr.open_array(store=path, mode="r")
        return zarr.open_array(store=path, mode="r", storage_options=storage.storage_options)
    except Exception as exc:  # zarr raises several unrelated types for a bad store
        cause = " ".join(str(exc).split())[:300]
        raise DataError(f"is not a readable Zarr array, or cannot be reached "
                        f"({type(exc).__name__}: {cause})", file=path) from None


class ZarrSource(Source):
    """Row ranges of a 2-D Zarr array, aligned to its chunks.

    Consecutive Zarr chunks are read together up to the target chunk size; a
    Zarr chunk larger than the target is read once and handed on in slices.

    Parameters
    ----------
    store : str, path-like or zarr.Array
        A store path or URL (``s3://bucket/data.zarr``; opened lazily on each
        worker) or an open array.
    chunk_size : int, optional
        Target rows per chunk.
    dtype : {"float64", "float32"} or None
        Working dtype of the arithmetic; None: the array's own if float32, else float64.

    storage_options : dict, optional
        For a URL: options of the fsspec filesystem (see :func:`streammix.read_parquet`).

    Feature names are taken from the array's ``columns`` attribute when present.
    """

    def __init__(self, store, *, chunk_size=None, dtype=None, storage_options=None):
        self._remember(store, chunk_size=chunk_size, dtype=dtype,
                       storage_options=storage_options)
        self.storage = None
        if is_url(store):  # s3://bucket/data.zarr ...: read through fsspec
            self.storage = Storage.of(store, storage_options)
        elif storage_options:
            raise ValueError("storage_options apply to URLs (s3://, gs://, ...), not to "
                             f"local paths such as {os.fspath(store)!r}")
        if isinstance(store, str | os.PathLike):
            self.path = os.fspath(store)
            array = _open(self.path, self.storage)
            self._array = None  # opened again where the chunk is read
            self.name = self.path
        else:
            self.path = None
            array = self._array = store
            self.name = f"zarr array {getattr(store, 'name', '')}".strip()
        if array.ndim != 2:
            raise DataError(f"expected a 2-D array (rows x features), got shape {array.shape}",
                            file=self.name)
        check_numeric_dtype(array.dtype, column="<array>", file=self.name)
        self.dtype = resolve_dtype(dtype, array.dtype)
        self.shape = tuple(array.shape)
        self.n_features = self.shape[1]
        check_has_features(self.n_features, self.name)
        columns = array.attrs.get("columns")
        named = isinstance(columns, list) and len(columns) == self.n_features
        self.feature_names = tuple(columns) if named else None
        rows_per_native = array.chunks[0]
        self._chunk_rows = chunk_rows_for(self.n_features, self.dtype, chunk_size)
        edges = [*range(0, self.shape[0], rows_per_native), self.shape[0]]
        ranges = split_rows(self.shape[0], edges, self._chunk_rows)
        self._plan = [
            Chunk(i, a, b - a, (a, b), f"{self.name} rows {a}:{b}")
            for i, (a, b) in enumerate(ranges)
        ]
        if self.shape[0] == 0:
            raise DataError("has zero rows", file=self.name)

    def plan(self):
        return self._plan

    @property
    def n_rows(self):
        return self.shape[0]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_opened"}

    def _array_here(self):
        if self._array is not None:
            return self._array
        opened = self.__dict__.get("_opened")
        if opened is None:
            opened = self.__dict__["_opened"] = _open(self.path, self.storage)
        return opened

    def read_chunk(self, chunk, payload=None):
        start, stop = chunk.key
        try:
            data = np.asarray(self._array_here()[start:stop])
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"rows {start}:{stop} cannot be read, damaged chunk ({exc})",
                            file=self.name) from None
        with np.errstate(over="ignore"):  # beyond float32's range: inf, reported below
            data = data.astype(self.dtype, copy=False)
        for offset in range(0, data.shape[0], self._chunk_rows):
            block = data[offset : offset + self._chunk_rows]
            yield start + offset, check_finite(block, start + offset, where=self.name,
                                               feature_names=self.feature_names)

    def fingerprint(self):
        array = self._array_here()
        found = {"source": "zarr", "name": self.name, "shape": list(self.shape),
                 "dtype": str(array.dtype), "chunks": list(array.chunks)}
        if self.path and self.storage is not None:  # every object's size and version
            fs = self.storage.fs
            found["files"] = sorted([os.path.relpath(name, self.path.split("://", 1)[1]),
                                     *self.storage.version(name)] for name in fs.find(self.path))
        elif self.path:  # every file's size and modification time, like Parquet files
            found["files"] = sorted(
                [os.path.relpath(os.path.join(root, f), self.path), st.st_size, st.st_mtime_ns]
                for root, _, names in os.walk(self.path) for f in names
                for st in [os.stat(os.path.join(root, f))])
        return found
