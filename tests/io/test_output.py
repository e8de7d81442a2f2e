"""Partitioned outputs: one part per chunk, committed only when every part exists."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import streammix as sm
from streammix.scoring import predict_to_parquet, score_to_parquet
from tests.conftest import write_table


@pytest.fixture
def dataset(tmp_path, blobs):
    folder = tmp_path / "data"
    folder.mkdir()
    write_table(folder / "a.parquet", blobs[:350], 100)
    write_table(folder / "b.parquet", blobs[350:], 100)
    return folder


def _parts(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_folder_output_has_one_part_per_chunk_and_a_manifest(tmp_path, dataset, blobs):
    model = sm.GaussianMixture(3, random_state=0, chunk_size=100).fit(blobs)
    out = tmp_path / "labels"
    rows = predict_to_parquet(model, str(dataset), str(out) + "/", proba=True)
    n_chunks = len(sm.read_parquet(dataset, chunk_size=100).plan())
    assert rows == len(blobs) and n_chunks == 7  # 100,100,100,50 | 100,100,50
    # _lock: the file the jobs writing it flock (kept: see streammix.io.lease)
    assert _parts(out) == ["_SUCCESS", "_lock"] + [f"part-{i:06d}.parquet"
                                                   for i in range(n_chunks)]
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert [p["name"] for p in manifest["parts"]] == _parts(out)[2:]
    assert manifest["rows"] == len(blobs) == sum(p["rows"] for p in manifest["parts"])
    table = pq.read_table(out)  # the parts in order are the rows in order
    np.testing.assert_array_equal(table["cluster"].to_numpy(), model.predict(blobs))
    np.testing.assert_allclose(np.column_stack([table[f"p{k}"].to_numpy() for k in range(3)]),
                               model.predict_proba(blobs), rtol=1e-12)


def test_a_failed_job_leaves_the_previous_output_whole(tmp_path, dataset, blobs):
    model = sm.GaussianMixture(3, random_state=0).fit(blobs)
    scorer = sm.AnomalyScorer(model, contamination=0.05).fit(blobs)
    out = tmp_path / "scores"
    counts = score_to_parquet(scorer, str(dataset), f"{out}/")
    assert counts["rows"] == len(blobs)
    assert counts["anomalies"] == int(scorer.predict(blobs).__eq__(-1).sum())
    before = {name: (out / name).read_bytes() for name in _parts(out)}
    bad = blobs[350:].copy()
    bad[200, 1] = np.nan  # in the last file's third row group: parts before it are written
    write_table(dataset / "b.parquet", bad, 100)
    with pytest.raises(sm.DataError, match=r"b\.parquet, row group 2.*row 550"):
        score_to_parquet(scorer, str(dataset), f"{out}/")
    assert {name: (out / name).read_bytes() for name in _parts(out)} == before  # no _temporary


def test_an_output_folder_holding_other_files_is_refused(tmp_path, dataset, blobs):
    model = sm.KMeans(3, random_state=0).fit(blobs)
    with pytest.raises(sm.DataError, match=r"data: holds other things than a streammix output "
                                           r"\(a\.parquet, b\.parquet\)"):
        predict_to_parquet(model, str(dataset), str(dataset))
    assert _parts(dataset) == ["a.parquet", "b.parquet"]


def test_a_commit_with_a_part_missing_changes_nothing(tmp_path):
    import pyarrow as pa

    from streammix.io.output import PartitionedOutput

    out = tmp_path / "out"
    first = PartitionedOutput(f"{out}/")
    first.prepare()
    parts = [first.write_part(i, pa.table({"x": [1.0, 2.0]})) for i in range(2)]
    first.commit(parts, {"rows": 4})
    before = {name: (out / name).read_bytes() for name in _parts(out)}
    second = PartitionedOutput(f"{out}/")
    second.prepare()
    parts = [second.write_part(i, pa.table({"x": [3.0]})) for i in range(2)]
    parts.append({"index": 2, "rows": 1})  # a part a worker never wrote
    with pytest.raises(sm.DataError, match=r"1 staged part\(s\) are missing \(part-000002"):
        second.commit(parts, {"rows": 3})
    second.abort()
    assert {name: (out / name).read_bytes() for name in _parts(out)} == before
