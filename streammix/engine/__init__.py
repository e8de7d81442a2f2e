"""Dask execution: map over chunks, reduce in a fixed tree, iterate batches of models."""

from .engine import FAN_IN, ChunkGroup, Engine, one_blas_thread
from .iterate import Run, iterate
from .sampling import sample_rows

__all__ = ["FAN_IN", "ChunkGroup", "Engine", "Run", "iterate", "one_blas_thread", "sample_rows"]
