"""Reading a streammix output folder: exactly the parts its ``_SUCCESS`` lists.

Folders are made as jobs leave them: committed by predict_to_parquet, then
changed the way another job (committing, or killed) changes them.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammix as sm
from streammix.scoring import predict_to_parquet
from tests.conftest import write_table


@pytest.fixture
def committed(tmp_path, blobs):
    """An output folder committed by one job (6 parts of 100 rows), and its labels."""
    data = write_table(tmp_path / "data.parquet", blobs, 100)
    model = sm.KMeans(3, random_state=0, n_init=1, chunk_size=100).fit(blobs)
    out = tmp_path / "labels"
    predict_to_parquet(model, str(data), f"{out}/")
    return out, model.predict(blobs)


def _labels(source):
    return np.concatenate([block[:, 0] for chunk in source.plan()
                           for _, block in source.read_chunk(chunk)])


def _other_job_part(path, rows=40):
    pq.write_table(pa.table({"cluster": np.full(rows, 7, dtype=np.int64)}), path)


def test_parts_beside_the_listed_ones_are_not_read(committed):
    out, expected = committed
    _other_job_part(out / "part-000009.parquet")  # another job's, not in _SUCCESS
    _other_job_part(out / "part-000002.parquet.x")  # not a part name: never read
    source = sm.read_parquet(out)
    assert [f.path for f in source.files] == [str(out / f"part-{i:06d}.parquet")
                                              for i in range(6)]
    assert source.n_rows == 600
    np.testing.assert_array_equal(_labels(source), expected)
    assert sm.read_parquet(f"{out}/").n_rows == 600  # spelt with a separator


def test_a_folder_without_its_success_is_refused_unless_asked(committed, tmp_path):
    out, _ = committed
    (out / "_SUCCESS").unlink()  # a commit under way: the manifest goes first
    _other_job_part(out / "part-000007.parquet")  # ...and another job's part comes
    with pytest.raises(sm.DataError, match=rf"{out}: is a streammix output without _SUCCESS: "
                                           r"a job is writing it, or was killed"):
        sm.read_parquet(out)
    with pytest.raises(sm.DataError, match="without _SUCCESS"):
        sm.KMeans(2).fit(str(out))  # every path in goes through the same reader
    assert sm.read_parquet(out, uncommitted="read").n_rows == 640  # what it holds, as asked
    assert sm.read_parquet(f"{out}/part-*.parquet").n_rows == 640  # a glob names files
    with pytest.raises(ValueError, match=r"uncommitted='yes': expected one of 'refuse', 'read'"):
        sm.read_parquet(out, uncommitted="yes")
    # another tool's output (Spark: an empty _SUCCESS, other part names) is any folder
    spark = tmp_path / "spark"
    spark.mkdir()
    (spark / "_SUCCESS").write_bytes(b"")
    _other_job_part(spark / "part-00000-1f2e.snappy.parquet")
    assert sm.read_parquet(spark).n_rows == 40


def test_staged_parts_are_never_read(tmp_path, committed):
    out, _ = committed
    staged = out / "_temporary" / "0123456789ab"
    staged.mkdir(parents=True)
    _other_job_part(staged / "part-000000.parquet")  # a job still writing
    assert sm.read_parquet(out).n_rows == 600
    first = tmp_path / "first"  # the first job ever on a folder, before its commit
    shutil.copytree(out / "_temporary", first / "_temporary")
    with pytest.raises(sm.DataError, match=rf"{first}: is a streammix output without _SUCCESS"):
        sm.read_parquet(first)
    with pytest.raises(sm.DataError, match=rf"{first}: directory holds no \.parquet files"):
        sm.read_parquet(first, uncommitted="read")


@pytest.mark.parametrize("change, message", [
    (lambda m: m["parts"][0].update(name="../data.parquet"),
     r"part 0 is named '\.\./data\.parquet', not part-NNNNNN\.parquet"),
    (lambda m: m["parts"][1].update(name="/etc/passwd"), r"part 1 is named '/etc/passwd'"),
    (lambda m: m["parts"][1].update(name="part-000001.parquet/../../data.parquet"),
     r"part 1 is named 'part-000001\.parquet/\.\./\.\./data\.parquet'"),
    (lambda m: m["parts"][2].update(name=["part-000002.parquet"]), r"part 2 is named"),
    (lambda m: m["parts"][2].update(rows=-1), r"part part-000002\.parquet has no valid row count"),
    (lambda m: m["parts"][2].update(rows=True), r"has no valid row count \(True\)"),
    (lambda m: m["parts"].append(dict(m["parts"][0])), r"lists part part-000000\.parquet twice"),
    (lambda m: m["parts"].append({"name": "part-000006.parquet", "rows": 1}),
     r"lists 1 part\(s\) that are missing \(part-000006\.parquet"),
    (lambda m: m.update(parts={}), r"lists no parts"),
    (lambda m: m.update(version=2), r"is a manifest of version 2; this streammix reads version 1"),
    (lambda m: m.update(version="1"), r'is a manifest of version "1";'),
    (lambda m: m["parts"][3].update(rows=101),
     r"part-000003\.parquet: holds 100 rows, but the output's _SUCCESS says 101"),
])
def test_a_manifest_is_untrusted_input(committed, change, message):
    out, _ = committed
    manifest = json.loads((out / "_SUCCESS").read_text())
    change(manifest)
    (out / "_SUCCESS").write_text(json.dumps(manifest))
    with pytest.raises(sm.DataError, match=message) as error:
        sm.read_parquet(out)
    assert str(out) in str(error.value)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[]", b'{"format": "x"}'])
def test_a_success_that_is_no_manifest_beside_streammix_parts_is_refused(committed, body):
    out, _ = committed
    (out / "_SUCCESS").write_bytes(body)
    with pytest.raises(sm.DataError, match=rf"{out}/_SUCCESS: is not a streammix manifest, "
                                           r"but the folder holds streammix parts"):
        sm.read_parquet(out)
    assert sm.read_parquet(out, uncommitted="read").n_rows == 600


def test_an_oversized_manifest_is_not_read_whole(committed, monkeypatch):
    from streammix.io import manifest

    out, _ = committed
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(sm.DataError, match=r"_SUCCESS: is larger than 100 bytes"):
        sm.read_parquet(out)


def test_output_folders_inside_a_folder_follow_the_same_rule(committed, tmp_path):
    """A folder of daily outputs (scores/2026-01-01/, ...): each output gives what its
    _SUCCESS lists, and one being written is refused."""
    out, expected = committed
    days = tmp_path / "days"
    shutil.copytree(out, days / "2026-01-01")
    shutil.copytree(out, days / "2026-01-02")
    _other_job_part(days / "2026-01-01" / "part-000008.parquet")  # beside the listed ones
    _other_job_part(days / "loose.parquet")  # any other file is read as before
    source = sm.read_parquet(days)
    assert source.n_rows == 2 * 600 + 40
    np.testing.assert_array_equal(_labels(source), np.concatenate([expected, expected,
                                                                   np.full(40, 7)]))
    (days / "2026-01-02" / "_SUCCESS").unlink()
    with pytest.raises(sm.DataError, match=rf"{days}/2026-01-02: is a streammix output without"):
        sm.read_parquet(days)
