"""Chunked readers: turn any supported input into a :class:`Source`.

Readers know nothing of models. See :func:`as_source` for what is accepted.
"""

from __future__ import annotations

import os

from ..exceptions import DataError
from .base import Chunk, Source, resolve_dtype
from .daskcoll import DaskSource, is_dask_collection
from .memory import ArraySource
from .parquet import ParquetSource
from .zarr import ZarrSource

__all__ = ["Chunk", "Source", "ArraySource", "DaskSource", "ParquetSource", "ZarrSource",
           "as_source", "read_parquet", "read_zarr"]


def read_parquet(path, columns=None, *, exclude_columns=None, chunk_size=None, dtype=None,
                 weight_column=None, storage_options=None,
                 uncommitted="refuse") -> ParquetSource:
    """Open Parquet data as a chunked source; no rows are read yet.

    Parameters
    ----------
    path : str, path-like, or list
        A file, a directory of ``.parquet`` files, or a glob such as
        ``"data/*.parquet"``; or URLs of the same: ``"s3://bucket/prefix/"``,
        ``"gs://..."``, ``"az://..."``, ``"https://..."`` (through fsspec).
    columns : list of str, optional
        Numeric columns to use (only these are read). Default: all columns.
    exclude_columns : list of str, optional
        Columns that are not features, such as ids and labels (each must exist).
    chunk_size : int, optional
        Target rows per chunk. Row groups are coalesced or decoded in batches to it.
    dtype : {"float64", "float32"} or None
        Working dtype of the arithmetic; None: float32 when every column is
        float32, else float64.

    weight_column : str, optional
        Numeric column of per-row weights: a fit weighs each row by it (as
        ``sample_weight``); it is not a feature.

    storage_options : dict, optional
        For URLs: options of the fsspec filesystem (``endpoint_url`` in
        ``client_kwargs``, ``profile``, ``anon``...). Credentials are best
        left to the backend's usual chain (environment, profile files,
        instance roles); none is ever written to a message or a file.

    uncommitted : {"refuse", "read"}
        What to do with a streammix output folder (a ``_SUCCESS`` manifest,
        a ``_temporary/`` staging folder or ``part-NNNNNN.parquet`` names)
        that has no ``_SUCCESS``: one job is writing it, or a job was killed
        before its commit. ``"refuse"`` (default): a DataError. ``"read"``:
        read every part it holds (staged parts under ``_temporary/`` never).
        A committed output is always read as exactly the parts its
        ``_SUCCESS`` lists, whatever else lies beside them; so are output
        folders inside a folder or prefix that is read.

    Returns
    -------
    ParquetSource

    Examples
    --------
    >>> import streammix as sm
    >>> data = sm.read_parquet("data/*.parquet", columns=["x", "y"])  # doctest: +SKIP
    >>> sm.GaussianMixture(3).fit(data)  # doctest: +SKIP
    >>> weighted = sm.read_parquet("data/", weight_column="count")  # doctest: +SKIP
    >>> sm.KMeans(8).fit(weighted)  # doctest: +SKIP
    >>> labels = sm.read_parquet("labels/", uncommitted="read")  # doctest: +SKIP
    """
    return ParquetSource(path, columns=columns, chunk_size=chunk_size, dtype=dtype,
                         weight_column=weight_column, exclude_columns=exclude_columns,
                         storage_options=storage_options, uncommitted=uncommitted)


def read_zarr(store, *, chunk_size=None, dtype=None, storage_options=None) -> ZarrSource:
    """Open a 2-D Zarr array (a store path or a ``zarr.Array``) as a chunked source.

    Examples
    --------
    >>> import streammix as sm
    >>> data = sm.read_zarr("data.zarr")  # doctest: +SKIP
    """
    return ZarrSource(store, chunk_size=chunk_size, dtype=dtype, storage_options=storage_options)


def _is_zarr_path(path: str) -> bool:
    return path.rstrip("/").endswith(".zarr") or os.path.exists(os.path.join(path, "zarr.json"))


def is_path_input(X) -> bool:
    """A path, or a list of paths (as opposed to in-memory data)."""
    if isinstance(X, str | os.PathLike):
        return True
    return isinstance(X, list | tuple) and bool(X) and all(
        isinstance(p, str | os.PathLike) for p in X)


def as_source(X, *, chunk_size=None, dtype=None, columns=None, storage_options=None) -> Source:
    """Any supported input as a :class:`Source`.

    Accepted: NumPy arrays, pandas DataFrames, pyarrow Tables, Dask arrays and
    dataframes, ``zarr.Array`` objects, paths or globs of Parquet files or
    directories, Zarr store paths, and sources from :func:`read_parquet` /
    :func:`read_zarr`. ``dtype`` always applies; ``chunk_size`` and ``columns``
    apply when given.
    """
    if dtype is not None:
        dtype = resolve_dtype(dtype)
    if isinstance(X, Source):
        return X.configure(dtype=dtype, chunk_size=chunk_size, columns=columns)
    if is_path_input(X):
        if not isinstance(X, list | tuple) and _is_zarr_path(os.fspath(X)):
            return ZarrSource(X, chunk_size=chunk_size, dtype=dtype,
                              storage_options=storage_options)
        return ParquetSource(X, columns=columns, chunk_size=chunk_size, dtype=dtype,
                             storage_options=storage_options)
    if is_dask_collection(X):
        source = DaskSource(X, dtype=dtype)
    elif type(X).__module__.startswith("zarr"):
        return ZarrSource(X, chunk_size=chunk_size, dtype=dtype)
    else:
        source = ArraySource(X, chunk_size=chunk_size, dtype=dtype)
    if columns is not None:
        raise DataError("columns= selects columns of Parquet input only; select them before "
                        "passing in-memory data", file=source.name)
    return source



def open_data(data, columns=None, *, exclude_columns=None, id_field=None, chunk_size=None,
              dtype=None, weight_column=None, storage_options=None,
              uncommitted="refuse") -> Source:
    """A named dataset (Parquet or Zarr path or URL) as a source, the way the command
    line names one: Parquet features are ``columns``, or every column but
    ``exclude_columns``, the weight column and ``id_field`` (when the first file's
    footer has it); a Zarr store has no named columns to choose. ``uncommitted``: as
    for :func:`read_parquet`.
    """
    excluded = list(exclude_columns or [])
    if _is_zarr_path(data):
        if weight_column or excluded:
            raise DataError("--weight-column and --exclude-columns name Parquet columns; "
                            "Zarr data has none", file=data)
        return as_source(data, chunk_size=chunk_size, dtype=dtype,
                         storage_options=storage_options)
    if id_field and not columns and id_field not in excluded:
        from .parquet import expand_paths, storage_for

        storage = storage_for(data, storage_options)
        first = expand_paths(data, storage, uncommitted=uncommitted)[0]
        if id_field in ParquetSource.inspect(first, storage)[1].names:
            excluded.append(id_field)
    return read_parquet(data, columns, exclude_columns=excluded, chunk_size=chunk_size,
                        dtype=dtype, weight_column=weight_column, storage_options=storage_options,
                        uncommitted=uncommitted)
