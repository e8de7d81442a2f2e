"""Parquet sources: planning by row groups, reading, and errors that say where."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammix as sm
from streammix.exceptions import DataError
from tests.conftest import write_table


def read_all(source):
    blocks = [block for chunk in source.plan() for _, block in source.read_chunk(chunk)]
    return np.concatenate(blocks)


def test_reads_rows_in_order_across_files_and_globs(blobs, blobs_parquet):
    for path in (blobs_parquet, str(blobs_parquet / "*.parquet"),
                 [blobs_parquet / "a.parquet", blobs_parquet / "b.parquet"]):
        source = sm.read_parquet(path, chunk_size=100)
        np.testing.assert_array_equal(read_all(source), blobs)
        assert source.n_rows == len(blobs)
        assert source.feature_names == ("f0", "f1", "f2")


def test_small_row_groups_are_coalesced_to_the_target(blobs_parquet):
    source = sm.read_parquet(blobs_parquet, chunk_size=100)
    # 37-row groups: two per chunk (74 rows) then a third would pass 100.
    sizes = [c.n_rows for c in source.plan()]
    assert max(sizes) <= 100 and sizes[0] == 74
    assert [c.start for c in source.plan()] == list(np.cumsum([0, *sizes[:-1]]))


@pytest.mark.parametrize("decode", ["whole", "in batches"])
def test_huge_row_group_is_decoded_in_bounded_blocks(tmp_path, blobs, monkeypatch, decode):
    if decode == "in batches":  # a row group over the size decoded in one piece
        monkeypatch.setattr("streammix.io.parquet._WHOLE_ROW_GROUP_BYTES", 0)
    path = write_table(tmp_path / "one.parquet", blobs, row_group_size=len(blobs))
    source = sm.read_parquet(path, chunk_size=64)
    (chunk,) = source.plan()
    blocks = [block for _, block in source.read_chunk(chunk)]
    assert max(len(b) for b in blocks) == 64
    np.testing.assert_array_equal(np.concatenate(blocks), blobs)


def test_only_selected_columns_are_read(tmp_path, blobs):
    table = pa.table({"a": blobs[:, 0], "label": ["x"] * len(blobs), "b": blobs[:, 1]})
    pq.write_table(table, tmp_path / "mixed.parquet", row_group_size=50)
    source = sm.read_parquet(tmp_path / "mixed.parquet", columns=["b", "a"])
    np.testing.assert_array_equal(read_all(source), blobs[:, [1, 0]])
    assert source.feature_names == ("b", "a")


def test_integer_and_float32_columns_and_float32_arithmetic(tmp_path):
    table = pa.table({"i": np.arange(10, dtype=np.int32), "f": np.linspace(0, 1, 10, dtype="f4")})
    pq.write_table(table, tmp_path / "t.parquet")
    source = sm.read_parquet(tmp_path / "t.parquet", dtype="float32")
    data = read_all(source)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data[:, 0], np.arange(10))


def test_missing_file():
    with pytest.raises(DataError, match=r"nowhere.parquet: no such file"):
        sm.read_parquet("nowhere.parquet")


def test_damaged_footer_names_the_file(tmp_path, blobs):
    path = write_table(tmp_path / "bad.parquet", blobs, 50)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"bad.parquet: is not a readable Parquet file"):
        sm.read_parquet(path)


def test_damaged_data_page_names_file_and_row_group(tmp_path, blobs):
    path = tmp_path / "pages.parquet"
    pq.write_table(pa.table({"f0": blobs[:, 0]}), path, row_group_size=100, compression="snappy")
    raw = bytearray(path.read_bytes())
    raw[200:260] = b"\xff" * 60  # inside the first row group's data
    path.write_bytes(bytes(raw))
    source = sm.read_parquet(path)
    with pytest.raises(DataError, match=r"pages.parquet, row group 0"):
        read_all(source)


def test_non_numeric_column_is_named(tmp_path):
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"s.parquet, column 'name': is not numeric"):
        sm.read_parquet(tmp_path / "s.parquet")


def test_missing_column_is_named(blobs_parquet):
    with pytest.raises(DataError, match=r"a.parquet, column 'zz': no such column"):
        sm.read_parquet(blobs_parquet, columns=["f0", "zz"])


def test_nan_and_inf_name_file_row_group_column_and_row(tmp_path, blobs):
    bad = blobs.copy()
    bad[123, 2] = np.nan
    write_table(tmp_path / "nan.parquet", bad, 50)
    source = sm.read_parquet(tmp_path / "nan.parquet", chunk_size=100)
    with pytest.raises(DataError, match=r"nan.parquet, row group 2, column 'f2', row 123: .*nan"):
        read_all(source)
    bad[123, 2] = np.inf
    write_table(tmp_path / "inf.parquet", bad, 50)
    with pytest.raises(DataError, match=r"row group 2, column 'f2', row 123: .*inf"):
        read_all(sm.read_parquet(tmp_path / "inf.parquet", chunk_size=100))


def test_nulls_are_named(tmp_path):
    pq.write_table(pa.table({"a": pa.array([1.0, None, 3.0])}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n.parquet, row group 0, column 'a', row 1: has missing"):
        read_all(sm.read_parquet(tmp_path / "n.parquet"))


def test_zero_rows(tmp_path):
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), tmp_path / "empty.parquet")
    with pytest.raises(DataError, match=r"empty.parquet: has zero rows"):
        sm.read_parquet(tmp_path / "empty.parquet")


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match=r"no .parquet files"):
        sm.read_parquet(tmp_path)


def test_errors_survive_pickling():
    import pickle

    error = DataError("bad", file="f.parquet", row_group=3, column="x", row=9)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.row_group == 3
