"""What every chunked source provides, and the checks every block passes.

A source turns its input into a *plan*: a list of small, picklable
:class:`Chunk` descriptors. Reading one descriptor yields (rows, features)
float blocks (row- or column-major), each checked for NaN/inf as it is read
(never in an extra pass). Sources know nothing of models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse

from ..exceptions import DataError

#: Default target of one chunk, in bytes of float data: small enough that data
#: of a few hundred MB already spreads over every core, large enough that task
#: overhead (about 1 ms) stays well under the compute per chunk.
DEFAULT_CHUNK_BYTES = 8 * 2**20

def resolve_dtype(dtype, native=None) -> np.dtype:
    """``float64`` or ``float32``, from a name or a NumPy dtype.

    ``None`` follows the input, as scikit-learn does: ``float32`` when the
    input's own dtype (``native``) is ``float32``, else ``float64``.
    """
    if dtype is None:
        return np.dtype(np.float32) if native is not None and np.dtype(native) == np.float32 \
            else np.dtype(np.float64)
    resolved = np.dtype(dtype)
    if resolved not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return resolved


@dataclass(frozen=True)
class Chunk:
    """One unit of reading: rows ``start:start + n_rows`` of the whole input.

    ``key`` is the source's own address of the chunk (a file and its row
    groups, a row range, a block index); ``where`` names it in error messages.
    """

    index: int
    start: int
    n_rows: int
    key: Any
    where: str = ""


class Source:
    """Base class of chunked sources.

    Subclasses set ``n_features``, ``feature_names`` (a tuple of str or None),
    ``dtype`` and ``name``, and implement :meth:`plan` and :meth:`read_chunk`.
    """

    n_features: int
    feature_names: tuple[str, ...] | None
    dtype: np.dtype
    name: str
    #: True when the rows already live in this process's memory.
    in_memory: bool = False

    def plan(self) -> list[Chunk]:
        raise NotImplementedError

    def _remember(self, data, **options):
        """Keep the constructor's input and options, for :meth:`configure`."""
        self._data, self._options = data, options

    def configure(self, *, dtype=None, chunk_size=None, columns=None) -> Source:
        """This source with other options (those given and accepted by the source)."""
        asked = {"dtype": dtype, "chunk_size": chunk_size, "columns": columns}
        changes = {k: v for k, v in asked.items() if v is not None and k in self._options}
        if columns is not None and "columns" not in self._options:
            raise DataError("columns= selects Parquet columns; this input has none to select",
                            file=self.name)
        if all(np.dtype(v) == self.dtype if k == "dtype" else
               v == self._options[k] for k, v in changes.items()):
            return self
        return type(self)(self._data, **{**self._options, **changes})

    #: Per-row weights aligned with the rows (see :meth:`with_weights`), or None.
    sample_weight: np.ndarray | None = None

    @property
    def weighted(self) -> bool:
        """Whether rows carry weights (fits then weigh each row's statistics by them)."""
        return self.sample_weight is not None

    def with_weights(self, sample_weight) -> Source:
        """A copy of this source whose rows carry ``sample_weight`` (an aligned 1-D array).

        Checked as scikit-learn checks ``sample_weight``: one finite, non-negative
        number per row, not all zero.
        """
        import copy

        weighted = copy.copy(self)
        weighted.sample_weight = check_sample_weight(sample_weight, self.n_rows)
        return weighted

    def total_weight(self) -> float:
        """The rows' total weight: their number when unweighted."""
        return float(self.n_rows) if self.sample_weight is None else \
            float(self.sample_weight.sum())

    def chunk_weights(self, chunk: Chunk, payload=None) -> np.ndarray | None:
        """The weights of the chunk's rows (float64, ``chunk.n_rows``), or None."""
        if self.sample_weight is None:
            return None
        return self.sample_weight[chunk.start : chunk.start + chunk.n_rows]

    def read_chunk(self, chunk: Chunk, payload=None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(global_start_row, block)`` pairs covering the chunk in order.

        ``payload`` is what the chunk's Dask input computed to, for sources
        whose chunks are themselves Dask tasks (see :meth:`dask_input`).
        """
        raise NotImplementedError

    def dask_input(self, chunk: Chunk):
        """A Dask object whose result is handed to :meth:`read_chunk`, or None."""
        return None

    @property
    def n_rows(self) -> int:
        return sum(c.n_rows for c in self.plan())

    def locate(self, chunk: Chunk, row: int) -> dict:
        """Where global ``row`` of ``chunk`` is, as DataError keywords (file, row group)."""
        return {"file": self.name}

    def fingerprint(self) -> dict:
        """What identifies the data (for checkpoints): JSON-serialisable."""
        return {"source": type(self).__name__, "name": self.name, "n_rows": self.n_rows,
                "n_features": self.n_features, "feature_names": self.feature_names}


#: Target of one chunk of sparse rows, in bytes of stored values. Larger than for
#: dense rows: each chunk's statistics are centre-sized (clusters x features)
#: arrays, as wide as the sparse rows themselves, and larger chunks amortise
#: them (a Lloyd pass over 100,000-column TF-IDF rows ran 1.4x faster).
SPARSE_CHUNK_BYTES = 4 * DEFAULT_CHUNK_BYTES


def chunk_rows_for(n_features: int, dtype, chunk_size: int | None,
                   target: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about ``target`` bytes of values."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size!r}")
        return int(chunk_size)
    row_bytes = max(1, n_features) * np.dtype(dtype).itemsize
    return max(1024, target // row_bytes)


def check_finite(block: np.ndarray, start: int, *, where, feature_names=None,
                 row_group_of=None) -> np.ndarray:
    """Return ``block``, or raise a :class:`DataError` naming its first NaN/inf cell.

    ``start`` is the block's first global row; ``row_group_of(local_row)``, when
    given, names the Parquet row group of a row of the block.
    """
    # NaN and inf propagate into the sum, so a finite sum clears the block in one
    # pass without a temporary; only an overflowing sum needs the cell-by-cell test.
    values = block.data if scipy.sparse.issparse(block) else block  # sparse: stored values
    if np.isfinite(values.sum()) or np.isfinite(values).all():
        return block
    if scipy.sparse.issparse(block):
        coo = block.tocoo()
        first = int(np.flatnonzero(~np.isfinite(coo.data))[0])
        row, col = int(coo.row[first]), int(coo.col[first])
    else:
        row, col = (int(i) for i in np.argwhere(~np.isfinite(block))[0])
    hint = "remove or impute NaN/inf values"
    if block.dtype == np.float32 and np.isinf(block[row, col]):
        hint = "it is beyond float32's range (3.4e38), or infinite: use dtype='float64'"
    raise DataError(
        f"value {block[row, col]} is not finite; {hint}",
        file=where,
        row_group=None if row_group_of is None else row_group_of(row),
        column=feature_names[col] if feature_names else col,
        row=start + row,
    )


def check_sample_weight(sample_weight, n_rows: int) -> np.ndarray:
    """``sample_weight`` as float64, or scikit-learn's ValueError naming what is wrong."""
    if isinstance(sample_weight, int | float | np.number):  # a scalar: every row alike
        sample_weight = np.full(n_rows, float(sample_weight))
    weights = np.asarray(sample_weight)
    if weights.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight must be numeric, got dtype {weights.dtype}")
    weights = weights.astype(np.float64)
    if weights.ndim != 1:
        raise ValueError("Sample weights must be 1D array or scalar")
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight.shape == {weights.shape}, expected {(n_rows,)}!")
    check_weight_values(weights, start=0, where="sample_weight")
    if weights.sum() <= 0:
        raise ValueError("Sample weights must contain at least one non-zero number: all "
                         "weights are zero.")
    return weights


def check_weight_values(weights: np.ndarray, *, start: int, where, **located) -> None:
    """Weights must be finite and non-negative: else an error naming the first bad row."""
    bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))
    if bad.size:
        row = int(bad[0])
        value = weights[row]
        # scikit-learn's wording, with the place of the first bad weight.
        message = "Input sample_weight contains NaN" if np.isnan(value) else \
            "Input sample_weight contains infinity" if np.isinf(value) else \
            f"Negative values in data passed to sample_weight ({value})"
        raise DataError(message, file=where, row=start + row, **located)


def check_has_features(n_features: int, name) -> None:
    """Data must have at least one feature (column) to cluster."""
    if n_features < 1:
        raise DataError("has no features (0 columns): nothing to cluster", file=name)


def check_numeric_dtype(dtype, *, column, file=None) -> None:
    """Integer, unsigned, float and bool columns are accepted; anything else is an error."""
    if np.dtype(dtype).kind not in "biuf":
        raise DataError(
            f"is not numeric (type {dtype}); select numeric columns with columns=[...]",
            file=file, column=column,
        )


def split_rows(n_rows: int, boundaries: list[int], target: int) -> list[tuple[int, int]]:
    """Group consecutive native blocks (row ``boundaries``) into ranges of ~``target`` rows.

    Small native blocks are coalesced; a range never splits a native block.
    """
    ranges, begin = [], 0
    for edge in boundaries[1:]:
        if edge - begin >= target:
            ranges.append((begin, edge))
            begin = edge
    if begin < n_rows:
        ranges.append((begin, n_rows))
    return ranges


class ChunkSubset(Source):
    """Some chunks of a source, seen as a source of their own (rows renumbered from 0).

    ``partial_fit`` initialises a model from its first mini-batch with ``fit``
    itself: every initialisation, weights, out-of-core reading and errors then
    behave as they do for a whole source.
    """

    def __init__(self, source: Source, chunks: list[Chunk]):
        self.source = source
        self._chunks = list(chunks)
        self._offsets, start, plan = [], 0, []
        for index, chunk in enumerate(self._chunks):
            plan.append(Chunk(index, start, chunk.n_rows, chunk.key, chunk.where))
            self._offsets.append(chunk.start - start)
            start += chunk.n_rows
        self._plan = plan
        self.n_features, self.feature_names = source.n_features, source.feature_names
        self.dtype, self.name, self.in_memory = source.dtype, source.name, source.in_memory
        self.sample_weight = None if source.sample_weight is None else np.concatenate(
            [source.sample_weight[c.start : c.start + c.n_rows] for c in self._chunks])

    def plan(self) -> list[Chunk]:
        return list(self._plan)

    def configure(self, **_) -> Source:
        """Already configured: made from a source the estimator has configured."""
        return self

    def checked_array(self):
        """The rows, when the source holds them in memory (for in-memory seedings)."""
        data = self.source.checked_array()
        parts = [data[chunk.start : chunk.start + chunk.n_rows] for chunk in self._chunks]
        if len(parts) == 1:
            return parts[0]
        return scipy.sparse.vstack(parts) if scipy.sparse.issparse(data) else np.concatenate(parts)

    def _original(self, chunk: Chunk) -> Chunk:
        return self._chunks[chunk.index]

    def read_chunk(self, chunk: Chunk, payload=None):
        offset = self._offsets[chunk.index]
        for start, block in self.source.read_chunk(self._original(chunk), payload):
            yield start - offset, block

    @property
    def weighted(self) -> bool:
        return self.source.weighted

    def total_weight(self) -> float:
        if self.sample_weight is not None or not self.source.weighted:
            return super().total_weight()
        return float(sum(self.chunk_weights(chunk).sum() for chunk in self._plan))

    def chunk_weights(self, chunk: Chunk, payload=None):
        if self.sample_weight is not None:
            return super().chunk_weights(chunk, payload)
        return self.source.chunk_weights(self._original(chunk), payload)

    def dask_input(self, chunk: Chunk):
        return self.source.dask_input(self._original(chunk))

    def locate(self, chunk: Chunk, row: int) -> dict:
        return self.source.locate(self._original(chunk), row + self._offsets[chunk.index])

    def fingerprint(self) -> dict:
        return {**self.source.fingerprint(), "chunks": [c.index for c in self._chunks]}
