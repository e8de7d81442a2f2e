"""Parquet files, directories and globs as chunked sources.

Chunks follow row groups, Parquet's unit of IO: consecutive small row groups
of a file are read together up to the target chunk size, and a row group larger
than the target is one chunk whose rows come in blocks of the target size. Such
a row group is decoded whole when it takes at most ``_WHOLE_ROW_GROUP_BYTES``
(faster), else in batches, so memory stays bounded without reading any row
group twice. Row counts come from the file footers, so planning reads no data.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import DataError
from .base import (
    Chunk,
    Source,
    check_finite,
    check_weight_values,
    chunk_rows_for,
    resolve_dtype,
)
from .manifest import MANIFEST, check_uncommitted, output_parts
from .storage import PARQUET_SUFFIXES, Storage, _reason, in_parallel, is_url, with_retries

#: Options of every Parquet file streammix writes: page checksums (CRC32), so that
#: damage to a page is detected when it is read, and plain (not dictionary)
#: pages, which decode faster for continuous floats.
WRITE_OPTIONS = {"write_page_checksum": True, "use_dictionary": False}

# Largest row group decoded in one piece (per Dask thread): pyarrow's default
# row group of 2**20 rows x 16 float64 columns.
_WHOLE_ROW_GROUP_BYTES = 128 * 2**20


def storage_for(path, storage_options=None) -> Storage | None:
    """The object store of ``path`` (a URL, or a list of URLs of one protocol); None if local."""
    paths = list(path) if isinstance(path, list | tuple) else [path]
    urls = [is_url(p) for p in paths]
    if not any(urls):
        if storage_options:
            raise ValueError("storage_options apply to URLs (s3://, gs://, ...), not to "
                             f"local paths such as {os.fspath(paths[0])!r}")
        return None
    protocols = {str(p).split("://", 1)[0] for p in paths}
    if not all(urls) or len(protocols) > 1:
        raise DataError("mixes local paths and URLs, or URLs of several stores; give one kind",
                        file=str(paths[0]))
    return Storage(protocols.pop(), storage_options)


def expand_paths(path, storage=None, *, uncommitted="refuse") -> list[str]:
    """A file, a directory (its ``*.parquet`` files, recursively) or a glob, sorted;
    with ``storage``, URLs of objects, prefixes or globs in that store. A streammix
    output folder gives the parts its ``_SUCCESS`` lists (see
    :func:`~streammix.io.manifest.output_parts` for ``uncommitted``)."""
    return [file for file, _ in _expand(path, storage, uncommitted)]


def _expand(path, storage, uncommitted) -> list[tuple[str, int | None]]:
    """:func:`expand_paths`, each file with the row count a manifest gives it (or None)."""
    if isinstance(path, list | tuple):
        return [p for item in path for p in _expand(item, storage, uncommitted)]
    if storage is not None:
        return storage.expand(str(path), uncommitted=uncommitted)
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path, recursive=True))
        if not files:
            raise DataError("no file matches this pattern", file=path)
        return [(file, None) for file in files]
    if os.path.isdir(path):
        import fsspec

        local, files = fsspec.filesystem("file"), []
        try:
            for root, folders, names in os.walk(path):
                # a streammix output folder gives what its _SUCCESS lists (io/manifest.py)
                listed = output_parts(local, root, names, folders, uncommitted=uncommitted)
                # hidden and _-prefixed folders (a job's _temporary/ staging) hold no data,
                # as for every Parquet reader
                folders[:] = [f for f in folders if not f.startswith((".", "_"))]
                files += [(os.path.join(root, name), rows) for name, rows in listed] \
                    if listed is not None else \
                    [(os.path.join(root, name), None) for name in names
                     if name.endswith(PARQUET_SUFFIXES) and not name.startswith((".", "_"))]
        except OSError as exc:
            raise DataError(f"cannot be listed ({_reason(exc)})", file=path) from None
        if not files:
            raise DataError("directory holds no .parquet files", file=path)
        return sorted(files)
    if not os.path.exists(path):
        raise DataError("no such file or directory", file=path)
    return [(path, None)]


def _is_numeric(arrow_type) -> bool:
    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
    )


def arrow_to_array(table, dtype, *, file=None, row_group_of=None, start=0) -> np.ndarray:
    """Columns of an Arrow table or batch as one (rows, columns) float array.

    Columns are copied into the rows of a (columns, rows) buffer, whose
    transpose is the row-major view the maths wants: cheaper than
    ``np.column_stack``. Nulls are an error naming the column and row.
    """
    out = np.empty((table.num_columns, table.num_rows), dtype=dtype)
    for j, name in enumerate(table.column_names):
        column = table.column(j)
        if not _is_numeric(column.type):
            raise DataError(f"is not numeric (type {column.type})", file=file, column=name)
        if column.null_count:
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"has missing values (null); {column.null_count} in this read",
                file=file, column=name, row=start + first,
                row_group=None if row_group_of is None else row_group_of(first),
            )
        values = column.to_numpy()
        with np.errstate(over="ignore"):  # beyond float32's range: inf, reported by the caller
            out[j] = values.astype(np.uint8) if values.dtype == bool else values
    return out.T


def _row_group_of(row_groups, group_starts, offset, row):
    """The row group holding ``row`` of a block that starts ``offset`` rows into a chunk."""
    return row_groups[int(np.searchsorted(group_starts, offset + row, side="right")) - 1]


@dataclass(frozen=True)
class _FileInfo:
    path: str
    size: int
    version: int | str  # modification time (ns) of a local file, the ETag of an object
    row_group_rows: tuple[int, ...]
    column_names: tuple[str, ...] = ()
    # An object's footer, kept from planning: a chunk read is then one request for
    # its byte ranges, not one more for the footer. (Local footers are in the page cache.)
    footer: pq.FileMetaData | None = field(default=None, compare=False, repr=False)


class ParquetSource(Source):
    """Row groups of one or more Parquet files.

    Parameters
    ----------
    path : str, path-like, or list of them
        A file, a directory of ``.parquet`` files, or a glob.
    columns : list of str, optional
        Columns to read (only these are read); default all.
    chunk_size : int, optional
        Target rows per chunk; default about 8 MiB of floats.
    dtype : {"float64", "float32"} or None
        Working dtype of the arithmetic; None: float32 when every column is
        float32, else float64.
    weight_column : str, optional
        A numeric column holding each row's weight (its ``sample_weight`` in
        a fit); it is not a feature. Weights must be finite and >= 0.
    exclude_columns : list of str, optional
        Columns that are not features (ids, labels); each must exist.
    storage_options : dict, optional
        For URLs (``s3://bucket/prefix/``, ``gs://``, ``az://``, ``https://``,
        ``memory://``): options of the fsspec filesystem (endpoint, profile,
        ``anon``...). Credentials are best left to the backend's usual chain.
    uncommitted : {"refuse", "read"}
        A streammix output folder is read as the parts its ``_SUCCESS`` lists;
        one without ``_SUCCESS`` (being written, or left by a killed job) is
        refused, unless ``"read"``: then every part it holds is read.

    Examples
    --------
    >>> import streammix as sm
    >>> source = sm.read_parquet("data/", columns=["x", "y"])  # doctest: +SKIP
    """

    def __init__(self, path, *, columns=None, chunk_size=None, dtype=None, weight_column=None,
                 exclude_columns=None, storage_options=None, uncommitted="refuse"):
        self.path = path
        self.weight_column = weight_column
        self._remember(path, columns=columns, chunk_size=chunk_size, dtype=dtype,
                       weight_column=weight_column, exclude_columns=exclude_columns,
                       storage_options=storage_options, uncommitted=uncommitted)
        self.storage = storage_for(path, storage_options)
        self.chunk_size = chunk_size
        self.files = []
        schema = chosen = None
        excluded = list(exclude_columns or ())
        listed = _expand(path, self.storage, check_uncommitted(uncommitted))
        files = [file for file, _ in listed]
        # footers only, many at a time: on object storage each is a round trip
        footers = in_parallel(lambda file: self.inspect(file, self.storage), files)
        for (file, rows), (info, file_schema) in zip(listed, footers, strict=True):
            if rows is not None and rows != sum(info.row_group_rows):
                raise DataError(f"holds {sum(info.row_group_rows)} rows, but the output's "
                                f"{MANIFEST} says {rows}: replaced or damaged since its commit",
                                file=file)
            if schema is None:
                schema = file_schema
                for name in excluded:  # a misspelt exclusion would silently do nothing
                    if name not in schema.names:
                        raise DataError(f"no such column to exclude (the file has "
                                        f"{', '.join(schema.names)})", file=file, column=name)
                chosen = [name for name in columns or schema.names
                          if name not in excluded and (columns or name != weight_column)]
                self._check_columns(file, schema, chosen)
            else:
                self._check_same_schema(file, file_schema, schema, columns)
            if weight_column is not None:
                self._check_columns(file, file_schema, [weight_column])
            self.files.append(info)
        self.columns = chosen
        if weight_column is not None and weight_column in self.columns:
            raise DataError("is the weight column, so it cannot also be a feature",
                            file=self.files[0].path, column=weight_column)
        self.column_types = [str(schema.field(c).type) for c in self.columns]
        all_float32 = all(t == "float" for t in self.column_types)
        self.dtype = resolve_dtype(dtype, np.float32 if all_float32 else None)
        if not self.columns:
            raise DataError("has no columns", file=self.files[0].path)
        self.n_features = len(self.columns)
        self.feature_names = tuple(self.columns)
        self.name = (str(path) if is_url(path) else os.fspath(path)) if not isinstance(
            path, list | tuple) else self.files[0].path
        self._chunk_rows = chunk_rows_for(self.n_features, self.dtype, chunk_size)
        self._plan = self._make_plan()
        if not self._plan:
            raise DataError("has zero rows", file=self.name)

    @staticmethod
    def inspect(file, storage=None):
        """``(file info, Arrow schema)`` from a file's footer; a DataError if unreadable."""
        try:
            if storage is None:
                stat = os.stat(file)
                size, version = stat.st_size, stat.st_mtime_ns
                meta = pq.read_metadata(file)
            else:
                size, version = storage.version(file)
                with storage.open(file) as handle:
                    meta = pq.read_metadata(handle)
            schema = meta.schema.to_arrow_schema()
        except FileNotFoundError:
            raise DataError("no such file", file=file) from None
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"is not a readable Parquet file ({exc})", file=file) from None
        # Columns are chosen by name: a name given twice could mean either column.
        seen = set()
        for name in schema.names:
            if name in seen:
                raise DataError(f"is the name of {schema.names.count(name)} columns of this "
                                "file; give each column its own name", file=file, column=name)
            seen.add(name)
        rows = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        return _FileInfo(file, size, version, rows, tuple(schema.names),
                         None if storage is None else meta), schema

    def _open(self, info: _FileInfo, *, memory_map=False) -> pq.ParquetFile:
        """A Parquet file: memory-mapped (if asked) when local, through the object store
        otherwise, with the footer read when planning (no request for it again)."""
        if self.storage is None:
            return pq.ParquetFile(info.path, memory_map=memory_map,
                                  page_checksum_verification=True)
        return pq.ParquetFile(self.storage.open(info.path), metadata=info.footer,
                              pre_buffer=True, page_checksum_verification=True)

    @staticmethod
    def _check_columns(file, schema, columns):
        for name in columns:
            if name not in schema.names:
                raise DataError(
                    f"no such column (the file has {', '.join(schema.names)})",
                    file=file, column=name,
                )
            field = schema.field(name)
            if not _is_numeric(field.type):
                raise DataError(
                    f"is not numeric (type {field.type}); choose numeric columns with --columns",
                    file=file, column=name,
                )

    def _check_same_schema(self, file, schema, first, columns):
        """A later file must have the first file's columns (those used) with the same types."""
        first_file = self.files[0].path
        if columns is None and schema.names != first.names:
            raise DataError(
                f"has columns {schema.names}, but the first file {first_file} has "
                f"{first.names}; give columns= (--columns) or make the files agree", file=file)
        for name in columns or first.names:
            if name not in schema.names:
                raise DataError(f"no such column (the file has {', '.join(schema.names)})",
                                file=file, column=name)
            if schema.field(name).type != first.field(name).type:
                raise DataError(f"is of type {schema.field(name).type} here but "
                                f"{first.field(name).type} in the first file {first_file}",
                                file=file, column=name)

    def _make_plan(self):
        plan, start = [], 0
        target = self._chunk_rows
        for f, info in enumerate(self.files):
            group, group_rows = [], 0
            for rg, rows in enumerate(info.row_group_rows):
                if rows == 0:
                    continue
                if group and group_rows + rows > target:
                    plan.append(self._chunk(len(plan), start, group_rows, f, group))
                    start += group_rows
                    group, group_rows = [], 0
                group.append(rg)
                group_rows += rows
            if group:
                plan.append(self._chunk(len(plan), start, group_rows, f, group))
                start += group_rows
        return plan

    def _chunk(self, index, start, n_rows, file_index, row_groups):
        path = self.files[file_index].path
        groups = f"{row_groups[0]}" if len(row_groups) == 1 else f"{row_groups[0]}-{row_groups[-1]}"
        return Chunk(index, start, n_rows, (file_index, tuple(row_groups)),
                     f"{path} row groups {groups}")

    def plan(self):
        return self._plan

    @property
    def n_rows(self):
        return sum(sum(f.row_group_rows) for f in self.files)

    def read_chunk(self, chunk, payload=None):
        file_index, row_groups = chunk.key
        info = self.files[file_index]
        sizes = [info.row_group_rows[rg] for rg in row_groups]
        group_starts = np.cumsum([0, *sizes])
        try:
            # Memory-mapped: pages go from the page cache to the decoder without a
            # copy (reads 15-20 % faster). use_threads=False: Dask's threads already
            # decode chunks side by side, and Arrow's own pool competing with them
            # made iterations 15 % slower.
            parquet = self._open(info, memory_map=True)
            if chunk.n_rows * self.n_features * 8 > _WHOLE_ROW_GROUP_BYTES:
                # A row group too large to hold decoded: stream it in chunk-sized batches.
                tables = parquet.iter_batches(
                    batch_size=self._chunk_rows, row_groups=list(row_groups), columns=self.columns,
                    use_threads=False,
                )
            else:
                # Decoding whole row groups is 20-25 % faster than Arrow's batch
                # reader; blocks are then chunk-sized zero-copy slices of the table.
                groups = list(row_groups)
                if self.storage is None:
                    whole = parquet.read_row_groups(groups, columns=self.columns,
                                                    use_threads=False)
                else:  # object storage: transient errors are retried (the whole read)
                    whole = with_retries(lambda: self._open(info).read_row_groups(
                        groups, columns=self.columns, use_threads=False))
                tables = (whole.slice(first, self._chunk_rows)
                          for first in range(0, whole.num_rows, self._chunk_rows))
            offset = 0  # rows of this chunk already yielded
            for table in tables:
                locate = partial(_row_group_of, row_groups, group_starts, offset)
                start = chunk.start + offset
                block = arrow_to_array(table, self.dtype, file=info.path, start=start,
                                       row_group_of=locate)
                yield start, check_finite(block, start, where=info.path, row_group_of=locate,
                                          feature_names=self.feature_names)
                offset += block.shape[0]
        except (pa.ArrowException, OSError) as exc:
            cause = " ".join(str(exc).split())[:300]
            raise DataError(f"cannot be read: damaged, changed since planning, or unreachable "
                            f"({type(exc).__name__}: {cause})", file=info.path,
                            row_group=self._damaged_row_group(info, row_groups)) from None

    def _damaged_row_group(self, info, row_groups):
        """The first of ``row_groups`` that fails to read alone (to name it in the error)."""
        for group in row_groups:
            try:
                self._open(info).read_row_groups([group], columns=self.columns,
                                                 use_threads=False)
            except (pa.ArrowException, OSError):
                return group
        return row_groups[0]

    def locate(self, chunk, row):
        file_index, row_groups = chunk.key
        sizes = [self.files[file_index].row_group_rows[rg] for rg in row_groups]
        group = _row_group_of(row_groups, np.cumsum([0, *sizes]), 0, row - chunk.start)
        return {"file": self.files[file_index].path, "row_group": group}

    def read_column(self, chunk, name):
        """Column ``name`` (any type) of the rows of ``chunk``, as an Arrow array."""
        file_index, row_groups = chunk.key
        info = self.files[file_index]
        try:
            table = self._open(info).read_row_groups(list(row_groups), columns=[name])
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise DataError(f"cannot read column ({exc})", file=info.path, column=name) from None
        return table.column(0).combine_chunks()

    @property
    def weighted(self) -> bool:
        return self.weight_column is not None or self.sample_weight is not None

    def with_weights(self, sample_weight):
        if self.weight_column is not None:
            raise ValueError(f"{self.name} already has its weights in column "
                             f"{self.weight_column!r}; give sample_weight or weight_column, "
                             "not both")
        return super().with_weights(sample_weight)

    def chunk_weights(self, chunk, payload=None):
        """The chunk's weights: from ``sample_weight``, or read from the weight column."""
        if self.weight_column is None:
            return super().chunk_weights(chunk, payload)
        column = self.read_column(chunk, self.weight_column)
        file = self.files[chunk.key[0]].path
        if column.null_count:
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError("has missing values (null): every row needs a weight",
                            column=self.weight_column, **self.locate(chunk, chunk.start + first),
                            row=chunk.start + first)
        weights = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))
        if bad.size:
            row = chunk.start + int(bad[0])
            check_weight_values(weights[bad[:1]], start=row, column=self.weight_column,
                                where=file, row_group=self.locate(chunk, row)["row_group"])
        return weights

    def total_weight(self) -> float:
        if self.weight_column is None:
            return super().total_weight()
        return float(sum(self.chunk_weights(chunk).sum() for chunk in self.plan()))

    def has_column(self, name) -> bool:
        """Whether every file has column ``name`` (a DataError if only some have it)."""
        lacking = [f.path for f in self.files if name not in f.column_names]
        if lacking and len(lacking) < len(self.files):
            raise DataError("no such column, though other files of this dataset have it",
                            file=lacking[0], column=name)
        return not lacking

    def fingerprint(self):
        return {
            "source": "parquet",
            "files": [[f.path, f.size, f.version] for f in self.files],
            "columns": self.columns,
            "weight_column": self.weight_column,
            "types": self.column_types,
            "n_rows": self.n_rows,
        }


def write_table(path, table: pa.Table) -> None:
    """``table`` as one local Parquet file that appears whole or not at all."""
    from .atomic import atomic_write

    with atomic_write(path) as handle:
        pq.write_table(table, handle, **WRITE_OPTIONS)
