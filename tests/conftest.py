"""Shared fixtures: small seeded mixtures in memory, in Parquet and in Zarr."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def make_blobs(n=600, seed=0, offset=0.0):
    """Three anisotropic 3-D clusters; ``offset`` shifts every coordinate."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, (n // 2, 3)) @ np.array([[1.0, 0.4, 0], [0, 0.6, 0.2], [0, 0, 0.8]])
    b = rng.normal([5.0, 5.0, 0.0], 0.5, (n // 3, 3))
    c = rng.normal([0.0, 6.0, 4.0], [0.3, 1.2, 0.7], (n - n // 2 - n // 3, 3))
    return np.concatenate([a, b, c]) + offset


def write_table(path, X, row_group_size, names=None):
    names = names or [f"f{j}" for j in range(X.shape[1])]
    table = pa.table({name: X[:, j] for j, name in enumerate(names)})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def pytest_collection_modifyitems(config, items):
    """A test that starts a service is slow too: ``-m "not slow"`` leaves it out."""
    for item in items:
        if item.get_closest_marker("service") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def blobs():
    return make_blobs()


@pytest.fixture
def blobs_parquet(tmp_path, blobs):
    """The blobs split over two files with row groups of 37 rows."""
    directory = tmp_path / "blobs"
    directory.mkdir()
    write_table(directory / "a.parquet", blobs[:250], 37)
    write_table(directory / "b.parquet", blobs[250:], 37)
    return directory


@pytest.fixture
def blobs_zarr(tmp_path, blobs):
    import zarr

    array = zarr.create_array(store=str(tmp_path / "blobs.zarr"), shape=blobs.shape,
                              chunks=(41, 3), dtype="f8")
    array[:] = blobs
    return str(tmp_path / "blobs.zarr")


@pytest.fixture
def read_counter(monkeypatch):
    """Counts ParquetSource reads per chunk (threads share the counter)."""
    counts, lock = Counter(), threading.Lock()
    from streammix.io import ParquetSource

    original = ParquetSource.read_chunk

    def counting(self, chunk, payload=None):
        with lock:
            counts[chunk.index] += 1
        yield from original(self, chunk, payload)

    monkeypatch.setattr(ParquetSource, "read_chunk", counting)
    return counts


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-compatible server on 127.0.0.1 (moto), started once, stopped at the end."""
    from tests._s3 import start_s3

    server = start_s3(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()
