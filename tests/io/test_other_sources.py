"""Zarr, in-memory and Dask sources read the same rows as the array they hold."""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import streammix as sm
from streammix.exceptions import DataError
from tests.io.test_parquet import read_all


def test_zarr_chunks_follow_zarr_chunks(blobs, blobs_zarr):
    source = sm.read_zarr(blobs_zarr, chunk_size=100)
    assert all(c.start % 41 == 0 for c in source.plan())  # never splits a Zarr chunk
    assert source.plan()[0].n_rows == 123
    np.testing.assert_array_equal(read_all(source), blobs)


def test_zarr_array_object_and_path_detection(blobs, blobs_zarr):
    import zarr

    np.testing.assert_array_equal(read_all(sm.as_source(zarr.open_array(blobs_zarr))), blobs)
    assert type(sm.as_source(blobs_zarr)).__name__ == "ZarrSource"


def test_zarr_errors(tmp_path, blobs):
    import zarr

    with pytest.raises(DataError, match=r"no such Zarr store"):
        sm.read_zarr(str(tmp_path / "none.zarr"))
    z = zarr.create_array(store=str(tmp_path / "one.zarr"), shape=(10,), dtype="f8")
    with pytest.raises(DataError, match=r"2-D"):
        sm.read_zarr(str(tmp_path / "one.zarr"))
    z = zarr.create_array(store=str(tmp_path / "nan.zarr"), shape=(20, 2), chunks=(5, 2),
                          dtype="f8")
    values = np.ones((20, 2))
    values[13, 1] = np.nan
    z[:] = values
    with pytest.raises(DataError, match=r"nan.zarr, column 1, row 13"):
        read_all(sm.read_zarr(str(tmp_path / "nan.zarr")))


@pytest.mark.parametrize("make", [
    lambda X: X,
    lambda X: pd.DataFrame(X, columns=["a", "b", "c"]),
    lambda X: pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2]}),
    lambda X: da.from_array(X, chunks=(70, 2)),
    lambda X: dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=4),
], ids=["numpy", "pandas", "arrow", "dask-array", "dask-dataframe"])
def test_in_memory_and_dask_inputs(blobs, make):
    source = sm.as_source(make(blobs), chunk_size=64)
    np.testing.assert_array_equal(read_all_with_payload(source), blobs)
    if not isinstance(make(blobs), np.ndarray | da.Array):
        assert source.feature_names == ("a", "b", "c")


def read_all_with_payload(source):
    import dask

    blocks = []
    for chunk in source.plan():
        payload = source.dask_input(chunk)
        payload = None if payload is None else dask.compute(payload)[0]
        blocks += [block for _, block in source.read_chunk(chunk, payload)]
    return np.concatenate(blocks)


def test_in_memory_errors():
    with pytest.raises(DataError, match=r"column 'name': is not numeric"):
        sm.as_source(pd.DataFrame({"a": [1.0], "name": ["x"]}))
    with pytest.raises(DataError, match=r"2-D"):
        sm.as_source(np.ones(5))
    with pytest.raises(DataError, match=r"row 1"):
        read_all(sm.as_source(np.array([[1.0], [np.inf]])))
