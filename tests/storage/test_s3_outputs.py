"""Partitioned outputs in a bucket of a real S3 server: one writer per prefix (a lease),
killed jobs' litter removed, and readers that take exactly what ``_SUCCESS`` lists."""

from __future__ import annotations

import collections
import json
import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammix as sm
from streammix.exceptions import OutputInUseError
from streammix.io import lease
from streammix.io.output import PartitionedOutput
from streammix.scoring import predict_to_parquet
from tests._writers import TwoWriters, kill_a_job
from tests.conftest import make_blobs, write_table

pytestmark = pytest.mark.service  # moto's server


@pytest.fixture
def bucket(s3):
    name = f"out-{uuid.uuid4().hex[:8]}"
    s3.filesystem().mkdir(name)
    return name


def _labels(source):
    return np.concatenate([block[:, 0] for chunk in source.plan()
                           for _, block in source.read_chunk(chunk)])


def _objects(s3, prefix):
    fs = s3.filesystem()
    return sorted(p[len(prefix) + 1:] for p in fs.find(prefix))


@pytest.mark.slow
def test_two_jobs_writing_one_prefix_leave_exactly_one_job_s_output(s3, bucket, tmp_path,
                                                                    monkeypatch):
    """16 runs of two jobs (two processes) at once on one prefix: each run ends with one
    job's output committed (no lease object left), and a clear refusal for the other."""
    writers = TwoWriters(tmp_path, f"s3://{bucket}/labels/", s3.options)
    winners = collections.Counter()
    try:
        for run in range(16):
            winners[writers.check(writers.run(monkeypatch, run), lock_file=False)] += 1
    finally:
        writers.close()
    assert sum(winners.values()) == 16
    print(f"16 runs, committed outputs by job: {dict(winners)}")


def _data(s3, bucket, tmp_path, X):
    """``X`` as one Parquet object of row groups of 100 rows; its URL."""
    s3.filesystem().put(str(write_table(tmp_path / "data.parquet", X, 100)),
                        f"{bucket}/data/data.parquet")
    return f"s3://{bucket}/data/data.parquet"


@pytest.mark.slow
def test_killed_jobs_staged_parts_are_removed_by_the_next_job(s3, bucket, tmp_path, blobs):
    data = _data(s3, bucket, tmp_path, blobs)
    model = sm.KMeans(3, random_state=0, n_init=1, chunk_size=100,
                      storage_options=s3.options).fit(blobs)
    model.save(tmp_path / "m.npz")
    out = f"s3://{bucket}/labels/"
    for _ in range(3):
        kill_a_job(tmp_path / "m.npz", data, out, s3.options)
        left = _objects(s3, f"{bucket}/labels")
        # only the killed job's own staged parts: each job removed what others left
        jobs = {name.split("/")[1] for name in left if name.startswith("_temporary/")}
        assert len(jobs) == 1, left
    assert json.loads(s3.filesystem().cat_file(f"{bucket}/labels/_lock"))["pid"] != os.getpid()
    # the last killed job's lease stays; its pid is gone: the next job takes it at once
    predict_to_parquet(model, data, out)
    assert _objects(s3, f"{bucket}/labels") == \
        ["_SUCCESS"] + [f"part-{i:06d}.parquet" for i in range(6)]
    np.testing.assert_array_equal(_labels(sm.read_parquet(out, storage_options=s3.options)),
                                  model.predict(blobs))


def test_a_live_lease_of_another_host_refuses_a_second_job(s3, bucket, monkeypatch):
    monkeypatch.setattr(lease, "SETTLE_SECONDS", 0.05)
    fs, out = s3.filesystem(), f"s3://{bucket}/labels/"
    fs.pipe_file(f"{bucket}/labels/_lock", json.dumps(
        {"owner": "x", "pid": 42, "host": "elsewhere", "expires": time.time() + 600}).encode())
    job = PartitionedOutput(out, s3.options)
    with pytest.raises(OutputInUseError, match=rf"output s3://{bucket}/labels is in use by "
                                               r"process 42 on elsewhere \(its lease runs until"):
        job.prepare()
    job.abort()
    assert _objects(s3, f"{bucket}/labels") == ["_lock"]  # nothing written, nothing taken
    fs.pipe_file(f"{bucket}/labels/_lock", json.dumps(  # expired: its holder stopped renewing
        {"owner": "x", "pid": 42, "host": "elsewhere", "expires": time.time() - 1}).encode())
    job = PartitionedOutput(out, s3.options)
    job.prepare()
    job.commit([job.write_part(0, pa.table({"x": [1.0]}))], {"rows": 1})
    assert _objects(s3, f"{bucket}/labels") == ["_SUCCESS", "part-000000.parquet"]


def test_a_job_that_lost_its_lease_does_not_commit(s3, bucket, monkeypatch):
    monkeypatch.setattr(lease, "SETTLE_SECONDS", 0.05)
    out = f"s3://{bucket}/labels/"
    job = PartitionedOutput(out, s3.options)
    job.prepare()
    parts = [job.write_part(i, pa.table({"x": [float(i)]})) for i in range(2)]
    held = job._lease
    held._stop.set()  # the job stalls (no renewal)...
    held._renewer.join()
    s3.filesystem().pipe_file(f"{bucket}/labels/_lock", json.dumps(  # ...and another takes it
        {"owner": "y", "pid": 7, "host": "elsewhere", "expires": time.time() + 60}).encode())
    assert held._renew_once() is False
    with pytest.raises(OutputInUseError, match=rf"output s3://{bucket}/labels: this job lost "
                                               r"its lease \(process 7 on elsewhere took it\)"):
        job.commit(parts, {"rows": 2})
    job.abort()
    assert _objects(s3, f"{bucket}/labels") == ["_lock"]  # the new holder's lease stays
    assert json.loads(s3.filesystem().cat_file(f"{bucket}/labels/_lock"))["pid"] == 7


def test_a_reader_takes_exactly_what_success_lists(s3, bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "SETTLE_SECONDS", 0.05)
    X = make_blobs()
    data = _data(s3, bucket, tmp_path, X)
    model = sm.KMeans(3, random_state=0, n_init=1, chunk_size=100,
                      storage_options=s3.options).fit(X)
    days, out = f"s3://{bucket}/days/", f"s3://{bucket}/days/d1/"
    predict_to_parquet(model, data, out)
    predict_to_parquet(model, data, f"{days}d2/")
    fs = s3.filesystem()
    stray = tmp_path / "stray.parquet"
    pq.write_table(pa.table({"cluster": np.full(40, 7, dtype=np.int64)}), stray)
    fs.put(str(stray), f"{bucket}/days/d1/part-000009.parquet")  # another job's part
    fs.put(str(stray), f"{bucket}/days/d1/_temporary/0123456789ab/part-000000.parquet")
    source = sm.read_parquet(out, storage_options=s3.options)
    assert source.n_rows == 600 and len(source.files) == 6
    np.testing.assert_array_equal(_labels(source), model.predict(X))
    both = sm.read_parquet(days, storage_options=s3.options)  # outputs inside a prefix
    np.testing.assert_array_equal(_labels(both), np.tile(model.predict(X), 2))
    fs.rm_file(f"{bucket}/days/d1/_SUCCESS")  # a commit under way
    for url in (out, days):
        with pytest.raises(sm.DataError, match=rf"s3://{bucket}/days/d1/?: is a streammix "
                                               r"output without _SUCCESS"):
            sm.read_parquet(url, storage_options=s3.options)
    # asked to read it anyway: every part, never the staged ones
    assert sm.read_parquet(out, storage_options=s3.options, uncommitted="read").n_rows == 640


def test_a_reader_sees_an_output_another_process_committed_since(s3, bucket, tmp_path,
                                                                 monkeypatch):
    """This process reads an output, another rewrites it: the next read is of the new one
    (not of listings this process cached, whose ETags are gone)."""
    monkeypatch.setattr(lease, "SETTLE_SECONDS", 0.05)
    X = make_blobs()
    model = sm.KMeans(3, random_state=0, n_init=1, chunk_size=100,
                      storage_options=s3.options).fit(X)
    out = f"s3://{bucket}/labels/"
    predict_to_parquet(model, _data(s3, bucket, tmp_path, X), out)
    assert sm.read_parquet(out, storage_options=s3.options).n_rows == 600
    other = s3.filesystem()  # another process's client: this one's caches know nothing
    stray = tmp_path / "new.parquet"
    pq.write_table(pa.table({"cluster": np.full(100, 2, dtype=np.int64)}), stray)
    other.put(str(stray), f"{bucket}/labels/part-000003.parquet")
    source = sm.read_parquet(out, storage_options=s3.options)
    assert source.n_rows == 600
    np.testing.assert_array_equal(_labels(source)[300:400], np.full(100, 2))
