"""Synthetic Gaussian mixtures written chunk by chunk (never the whole array in memory)."""

from __future__ import annotations

import os

import numpy as np


def mixture_spec(n_components: int, n_features: int, seed: int, spread: float = 8.0):
    """Weights, means and covariance factors of a random, well-separated mixture."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.uniform(-spread, spread, size=(n_components, n_features))
    factors = rng.normal(scale=0.5, size=(n_components, n_features, n_features))
    factors += np.eye(n_features)[None]
    return weights, means, factors


def mixture_blocks(n_rows: int, n_features: int = 16, n_components: int = 8, *,
                   seed: int = 0, block_rows: int = 1_000_000, mixture_seed: int | None = None):
    """Yield ``(X, labels)`` blocks of a seeded mixture, ``block_rows`` rows at a time.

    The mixture (weights, means, covariances) comes from ``mixture_seed``
    (default ``seed``), the rows from ``seed``: more rows of the same mixture
    take another ``seed`` and the same ``mixture_seed``. Every block has its
    own generator derived from ``seed``, so the rows depend on ``seed`` and
    ``block_rows`` only.
    """
    weights, means, factors = mixture_spec(n_components, n_features,
                                           seed if mixture_seed is None else mixture_seed)
    streams = np.random.SeedSequence(seed).spawn((n_rows + block_rows - 1) // block_rows)
    for i, stream in enumerate(streams):
        rng = np.random.default_rng(stream)
        rows = min(block_rows, n_rows - i * block_rows)
        labels = rng.choice(n_components, size=rows, p=weights)
        z = rng.standard_normal((rows, n_features))
        X = means[labels] + np.einsum("nd,nde->ne", z, factors[labels], optimize=True)
        yield X, labels


def write_parquet(path, n_rows: int, n_features: int = 16, n_components: int = 8, *,
                  seed: int = 0, row_group_rows: int = 250_000, files: int = 1,
                  dtype="float64", mixture_seed: int | None = None) -> list[str]:
    """Write a seeded mixture to ``files`` Parquet files under ``path`` (a directory).

    Returns the file paths. Columns are ``x0, x1, ...``; each row group is
    generated and written on its own, so memory stays at one row group.
    Columns are snappy-compressed without dictionary encoding: continuous
    floats have no repeated values for a dictionary to share, and decoding
    the dictionary pages a writer tries first made reads about 20 % slower.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io.parquet import WRITE_OPTIONS

    os.makedirs(path, exist_ok=True)
    names = [f"x{j}" for j in range(n_features)]
    per_file = -(-n_rows // files)
    paths, writer, written = [], None, 0
    blocks = mixture_blocks(n_rows, n_features, n_components, seed=seed, block_rows=row_group_rows,
                            mixture_seed=mixture_seed)
    for X, _ in blocks:
        if writer is None or written >= per_file:
            if writer is not None:
                writer.close()
            paths.append(os.path.join(path, f"part-{len(paths):04d}.parquet"))
            schema = pa.schema([(n, pa.from_numpy_dtype(np.dtype(dtype))) for n in names])
            writer, written = pq.ParquetWriter(paths[-1], schema, **WRITE_OPTIONS), 0
        table = pa.Table.from_arrays([pa.array(X[:, j].astype(dtype)) for j in range(n_features)],
                                     names=names)
        writer.write_table(table, row_group_size=row_group_rows)
        written += X.shape[0]
    if writer is not None:
        writer.close()
    return paths


def write_zarr(path, n_rows: int, n_features: int = 16, n_components: int = 8, *,
               seed: int = 0, chunk_rows: int = 250_000, dtype="float64",
               mixture_seed: int | None = None):
    """Write a seeded mixture to a 2-D Zarr array at ``path``, one chunk at a time."""
    import zarr

    array = zarr.create_array(store=path, shape=(n_rows, n_features),
                              chunks=(chunk_rows, n_features), dtype=dtype, overwrite=True)
    array.attrs["columns"] = [f"x{j}" for j in range(n_features)]
    start = 0
    for X, _ in mixture_blocks(n_rows, n_features, n_components, seed=seed, block_rows=chunk_rows,
                               mixture_seed=mixture_seed):
        array[start : start + X.shape[0]] = X.astype(dtype)
        start += X.shape[0]
    return array


def write_jsonl(target, n_rows: int, n_features: int = 16, n_components: int = 8, *,
                seed: int = 0, anomalies: float = 0.0, block_rows: int = 100_000,
                mixture_seed: int | None = None):
    """Write records ``{"id", "x0", ..., "injected"}`` of a seeded mixture as JSON lines,
    to ``target``: a path, or an open text file.

    A fraction ``anomalies`` of the records is moved far from every component
    (``"injected": true``), to try anomaly scoring on.
    """
    if isinstance(target, str | os.PathLike):
        with open(target, "w", encoding="utf-8") as handle:
            return write_jsonl(handle, n_rows, n_features, n_components, seed=seed,
                               anomalies=anomalies, block_rows=block_rows,
                               mixture_seed=mixture_seed)
    handle = target
    import json

    _, means, _ = mixture_spec(n_components, n_features,
                               seed if mixture_seed is None else mixture_seed)
    spread = np.abs(means).max()
    rng = np.random.default_rng([seed, 1])
    names = [f"x{j}" for j in range(n_features)]
    row_id = 0
    for X, _ in mixture_blocks(n_rows, n_features, n_components, seed=seed,
                               block_rows=block_rows, mixture_seed=mixture_seed):
        injected = rng.random(len(X)) < anomalies
        X[injected] += rng.choice([-1.0, 1.0], size=(injected.sum(), n_features)) * 3 * spread
        for row, flag in zip(X, injected, strict=True):
            record = {"id": row_id, **dict(zip(names, map(float, row), strict=True)),
                      "injected": bool(flag)}
            handle.write(json.dumps(record) + "\n")
            row_id += 1
