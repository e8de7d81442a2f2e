"""One job at a time writes an output folder: a lease, and what killed jobs leave."""

from __future__ import annotations

import collections
import os

import pyarrow as pa
import pytest

import streammix as sm
from streammix.exceptions import OutputInUseError
from streammix.io.output import PartitionedOutput
from streammix.scoring import predict_to_parquet
from tests._writers import TwoWriters, kill_a_job
from tests.conftest import write_table


def test_two_jobs_writing_one_folder_leave_exactly_one_job_s_output(tmp_path, monkeypatch):
    """16 runs of two jobs (two processes) at once on one folder: each run ends with one
    job's output committed, and a clear refusal for the other."""
    writers = TwoWriters(tmp_path, f"{tmp_path}/out/")
    winners = collections.Counter()
    try:
        for run in range(16):
            winners[writers.check(writers.run(monkeypatch, run), lock_file=True)] += 1
    finally:
        writers.close()
    assert sum(winners.values()) == 16
    print(f"16 runs, committed outputs by job: {dict(winners)}")


def test_a_second_writer_is_refused_until_the_first_commits(tmp_path):
    out = f"{tmp_path}/out/"
    first, second = PartitionedOutput(out), PartitionedOutput(out)
    first.prepare()
    with pytest.raises(OutputInUseError, match=rf"output {tmp_path}/out is in use by process "
                                               rf"{os.getpid()} on .*lock file "
                                               rf"{tmp_path}/out/_lock.*wait for that job"):
        second.prepare()
    second.abort()  # what a caller does on any error: must not touch the holder's parts
    parts = [first.write_part(i, pa.table({"x": [float(i)]})) for i in range(3)]
    first.commit(parts, {"rows": 3})
    second = PartitionedOutput(out)
    second.prepare()  # released by the commit
    second.abort()
    assert sm.read_parquet(out).n_rows == 3


def test_killed_jobs_staged_parts_are_removed_by_the_next_job(tmp_path, blobs):
    data = write_table(tmp_path / "data.parquet", blobs, 100)
    model = sm.KMeans(3, random_state=0, n_init=1, chunk_size=100).fit(blobs)
    model.save(tmp_path / "m.npz")
    out = tmp_path / "out"
    for _ in range(3):
        kill_a_job(tmp_path / "m.npz", data, f"{out}/")
        # each job removed what the jobs before it staged: only its own parts stay
        jobs = list((out / "_temporary").iterdir())
        assert len(jobs) == 1 and len(list(jobs[0].glob("part-*.parquet"))) >= 3, jobs
    predict_to_parquet(model, str(data), f"{out}/")  # the kernel released their locks
    assert sorted(p.name for p in out.iterdir()) == \
        ["_SUCCESS", "_lock"] + [f"part-{i:06d}.parquet" for i in range(6)]


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    from streammix.engine.checkpoint import Checkpoint

    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    for folder, name in ((out, "_lock"), (ckpt, "lock")):
        folder.mkdir()
        (folder / name).symlink_to(precious)
    with pytest.raises(sm.DataError, match=rf"{out}: cannot be written \(OSError"):
        PartitionedOutput(f"{out}/").prepare()
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        with Checkpoint(ckpt, {"estimator": "X", "data": {}, "params": {}}):
            pass
    assert precious.read_text() == "keep me"
