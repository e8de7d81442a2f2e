"""A seeded split of a source's rows into two parts, the same however it is chunked.

Each row draws one uniform number from a counter-based generator positioned
at its global index (:func:`streammix.core.random.row_uniforms`), keyed by the
split's seed: the rows drawing less than ``fraction`` are *held out*. The draw
depends only on the seed and the row's index, so the two parts are the same
for any chunk size, reader or number of workers, and neither part ever reads
the other's rows. In-memory data is split into a smaller in-memory array; other
sources are wrapped, and read the kept rows chunk by chunk.
"""

from __future__ import annotations

import copy

import numpy as np

from ..core.random import row_uniforms
from .base import Chunk, Source
from .memory import ArraySource


def split_seed(root: np.random.SeedSequence) -> int:
    """The split's key (128 bits, as Philox takes) from a root seed."""
    low, high = (int(v) for v in root.generate_state(2, np.uint64))
    return low | high << 64


def held_out(seed: int, start: int, n_rows: int, fraction: float) -> np.ndarray:
    """Which of rows ``start:start + n_rows`` the split with ``seed`` holds out."""
    return row_uniforms(seed, start, n_rows)[:, 0] < fraction


def split_rows(source: Source, seed: int, fraction: float, *, holdout: bool,
               weighted: bool = True) -> Source:
    """The rows of ``source`` that the split holds out (``holdout=True``) or keeps.

    ``weighted=False`` drops the rows' weights (a quantile of rows, not of weight).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction!r}")
    if isinstance(source, ArraySource):
        mask = held_out(seed, 0, source.n_rows, fraction) == holdout
        part = ArraySource(source.array[mask], **source._options)
        part.feature_names, part.name = source.feature_names, source.name
        if weighted and source.sample_weight is not None:
            part.sample_weight = source.sample_weight[mask]
        return part
    return RowSplit(source, seed, fraction, holdout=holdout, weighted=weighted)


class RowSplit(Source):
    """The rows of ``inner`` on one side of a seeded split (see the module).

    Chunks are the inner source's, renumbered over the kept rows; a chunk that
    keeps no row is left out.
    """

    def __init__(self, inner: Source, seed: int, fraction: float, *, holdout: bool,
                 weighted: bool = True):
        self.inner, self.seed, self.fraction = inner, int(seed), float(fraction)
        self.holdout, self.keep_weights = holdout, weighted
        self.n_features, self.feature_names = inner.n_features, inner.feature_names
        self.dtype, self.name, self.in_memory = inner.dtype, inner.name, inner.in_memory
        self._plan = None

    def configure(self, *, dtype=None, chunk_size=None, columns=None) -> Source:
        inner = self.inner.configure(dtype=dtype, chunk_size=chunk_size, columns=columns)
        if inner is self.inner:
            return self
        return RowSplit(inner, self.seed, self.fraction, holdout=self.holdout,
                        weighted=self.keep_weights)

    def _kept(self, start: int, n_rows: int) -> np.ndarray:
        return held_out(self.seed, start, n_rows, self.fraction) == self.holdout

    def plan(self) -> list[Chunk]:
        if self._plan is None:
            plan, start = [], 0
            for chunk in self.inner.plan():
                kept = int(self._kept(chunk.start, chunk.n_rows).sum())
                if kept:
                    plan.append(Chunk(len(plan), start, kept, chunk, chunk.where))
                    start += kept
            self._plan = plan
        return self._plan

    def read_chunk(self, chunk: Chunk, payload=None):
        start = chunk.start
        for inner_start, block in self.inner.read_chunk(chunk.key, payload):
            kept = self._kept(inner_start, block.shape[0])
            yield start, block[kept]
            start += int(kept.sum())

    def dask_input(self, chunk: Chunk):
        return self.inner.dask_input(chunk.key)

    @property
    def weighted(self) -> bool:
        return self.keep_weights and (self.inner.weighted or self.sample_weight is not None)

    def with_weights(self, sample_weight) -> Source:
        if self.inner.weighted and self.keep_weights:
            raise ValueError(f"{self.name} already has its weights")
        weighted = copy.copy(super().with_weights(sample_weight))
        weighted.keep_weights = True
        return weighted

    def chunk_weights(self, chunk: Chunk, payload=None):
        if not self.keep_weights:
            return None
        if self.sample_weight is not None:
            return super().chunk_weights(chunk, payload)
        weights = self.inner.chunk_weights(chunk.key, payload)
        inner = chunk.key
        return None if weights is None else weights[self._kept(inner.start, inner.n_rows)]

    def locate(self, chunk: Chunk, row: int) -> dict:
        inner = chunk.key
        rows = inner.start + np.flatnonzero(self._kept(inner.start, inner.n_rows))
        return self.inner.locate(inner, int(rows[row - chunk.start]))

    def fingerprint(self) -> dict:
        return {**self.inner.fingerprint(), "n_rows": self.n_rows,
                "split": {"seed": self.seed, "fraction": self.fraction,
                          "holdout": self.holdout}}
