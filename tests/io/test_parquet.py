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


@pytest.mark.parametrize("make", [
    lambda: sm.GaussianMixture(3, random_state=0),
    lambda: sm.GaussianMixture(3, covariance_type="diag", init_params="random", random_state=0),
    lambda: sm.GaussianMixture(3, covariance_type="tied", init_params="random_from_data"),
    lambda: sm.KMeans(3, random_state=0),
    lambda: sm.KMeans(3, init="k-means++", random_state=0),
    lambda: sm.MiniBatchKMeans(3, batch_size=100, random_state=0),
], ids=["gmm", "gmm-random", "gmm-tied", "kmeans||", "kmeans++", "minibatch"])
def test_values_whose_squares_overflow_are_located(tmp_path, blobs, make):
    damaged = blobs.copy()
    damaged[437, 1] = -1e181  # finite, as flipped bits can decode
    write_table(tmp_path / "a.parquet", damaged, 100)
    with pytest.raises(sm.DataError, match=r"a\.parquet, row group 4, column 'f1', row 437: "
                                           r"value -1e\+181"):
        make().fit(tmp_path / "a.parquet")


def test_float32_overflow_is_located_and_explained(tmp_path, blobs):
    damaged = blobs.copy()
    damaged[5, 2] = 1e39
    write_table(tmp_path / "a.parquet", damaged, 100)
    with pytest.raises(sm.DataError, match=r"row group 0, column 'f2', row 5: .*float32's range"):
        sm.GaussianMixture(3, dtype="float32").fit(tmp_path / "a.parquet")


def test_every_file_must_match_the_first_files_schema(tmp_path, blobs):
    write_table(tmp_path / "a.parquet", blobs[:100], 50)
    extra = pa.table({**{f"f{j}": blobs[100:200, j] for j in range(3)}, "g": blobs[100:200, 0]})
    pq.write_table(extra, tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: has columns .* but the first file"):
        sm.read_parquet(tmp_path)
    assert sm.read_parquet(tmp_path, columns=["f0", "f1"]).n_rows == 200  # g is not read
    flags = pa.table({"f0": blobs[:10, 0] > 0, "f1": blobs[:10, 1], "f2": blobs[:10, 2]})
    pq.write_table(flags, tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet, column 'f0': is of type bool here but "
                                        r"double in the first file"):
        sm.read_parquet(tmp_path)


def test_an_id_column_missing_from_a_later_file_is_named(tmp_path, blobs):
    pq.write_table(pa.table({"id": np.arange(10), **{f"f{j}": blobs[:10, j] for j in range(3)}}),
                   tmp_path / "a.parquet")
    write_table(tmp_path / "b.parquet", blobs[10:20], 5)
    source = sm.read_parquet(tmp_path, columns=["f0", "f1", "f2"])
    with pytest.raises(DataError, match=r"b\.parquet, column 'id': no such column, though"):
        source.has_column("id")


@pytest.mark.parametrize("make", [lambda tmp: np.empty((10, 0)),
                                  lambda tmp: __import__("zarr").create_array(
                                      store=str(tmp / "z.zarr"), shape=(100, 0), chunks=(10, 1),
                                      dtype="f8")], ids=["numpy", "zarr"])
def test_data_without_features_is_refused(tmp_path, make):
    # NumPy input gets scikit-learn's message, Zarr input streammix's.
    with pytest.raises(ValueError, match=r"has no features \(0 columns\)|0 feature\(s\)"):
        sm.GaussianMixture(1).fit(make(tmp_path))


def test_flipped_bytes_in_a_page_are_detected_in_files_streammix_writes(tmp_path):
    from streammix.datasets import write_parquet

    (path,) = write_parquet(tmp_path / "d", 20_000, 3, 2, seed=0, row_group_rows=10_000)
    data = bytearray(open(path, "rb").read())
    middle = pq.ParquetFile(path).metadata.row_group(1).column(2)
    data[middle.data_page_offset + middle.total_compressed_size // 2] ^= 0x10
    open(path, "wb").write(bytes(data))
    with pytest.raises(DataError, match=r"row group 1: cannot be read.*(CRC|checksum)"):
        sm.GaussianMixture(2).fit(path)
