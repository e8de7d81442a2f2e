"""Checkpoints in a bucket of a real S3 server: one PUT per state, a lease, kill -9 + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

import streammix as sm
from streammix.engine.checkpoint import Checkpoint
from streammix.exceptions import CheckpointInUseError
from streammix.io import lease
from tests._s3 import SECRET, put_parquet
from tests.conftest import make_blobs

pytestmark = pytest.mark.service  # an S3 server (moto)

FITS = {
    "gmm": "sm.GaussianMixture(3, n_init=2, tol=1e-6, random_state=0, chunk_size=60, "
           "checkpoint=ckpt, storage_options=options).fit(data)",
    "kmeans": "sm.KMeans(3, init='k-means||', n_init=2, tol=1e-6, random_state=0, "
              "chunk_size=60, checkpoint=ckpt, storage_options=options).fit(data)",
}

# In a child process: counts the checkpoint's state writes and kills itself with
# SIGKILL at the chosen one: before its PUT, after it, or after a PUT of half the
# object (what a store that does not write atomically could leave).
CHILD = textwrap.dedent("""
    import io, json, os, signal, sys
    import numpy as np
    import streammix as sm
    import streammix.engine.checkpoint as checkpoint
    from streammix.io.storage import Storage
    kind, data, ckpt, options, kill_at, when = sys.argv[1:7]
    options, kill_at = json.loads(options), int(kill_at)
    real_write, count = checkpoint.write_npz, [0]
    def write(path, arrays, storage_options=None):
        count[0] += 1
        if count[0] == kill_at and when == "torn":
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
            Storage.of(path, storage_options).fs.pipe_file(path, half)
        if count[0] == kill_at and when in ("before", "torn"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(path, arrays, storage_options)
        if count[0] == kill_at and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.write_npz = write
    eval(FITS[kind], {"sm": sm, "ckpt": ckpt, "data": data, "options": options})
    print("finished", count[0])
""")


@pytest.fixture
def bucket(s3, tmp_path):
    return put_parquet(s3, tmp_path, make_blobs())


def fit_in_child(s3, kind, data, ckpt, kill_at, when):
    script = f"FITS = {FITS!r}\n{CHILD}"
    return subprocess.run([sys.executable, "-c", script, kind, data, ckpt,
                           json.dumps(s3.options), str(kill_at), when],
                          capture_output=True, text=True, timeout=300)


def fitted(model):
    names = ("weights_", "means_", "covariances_", "cluster_centers_", "n_iter_", "lower_bound_",
             "inertia_")
    return {n: getattr(model, n) for n in names if hasattr(model, n)}


@pytest.mark.parametrize("kind", list(FITS))
def test_a_fit_killed_again_and_again_resumes_from_the_bucket_to_the_same_model(s3, bucket,
                                                                                 kind):
    data, ckpt = f"s3://{bucket}/blobs/", f"s3://{bucket}/ckpt-{kind}/"
    expected = fitted(eval(FITS[kind], {"sm": sm, "ckpt": None, "data": data,
                                        "options": s3.options}))
    done = fit_in_child(s3, kind, data, f"s3://{bucket}/count-{kind}/", 10**9, "never")
    assert done.returncode == 0, done.stderr
    writes = int(done.stdout.split()[-1])
    assert writes > 8
    step, kills = max(2, writes // 5), 0
    while True:  # killed a few state writes after each (re)start
        child = fit_in_child(s3, kind, data, ckpt, step, ("before", "after", "torn")[kills % 3])
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        kills += 1
        assert kills < 40, "the fit makes no progress across restarts"
    assert kills >= 3
    resumed = fitted(eval(FITS[kind], {"sm": sm, "ckpt": ckpt, "data": data,
                                       "options": s3.options}))
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    objects = [p.rsplit("/", 1)[-1] for p in s3.filesystem().find(f"{bucket}/ckpt-{kind}/")]
    assert "lock" not in objects  # the lease went with the last fit
    assert SECRET.encode() not in b"".join(
        s3.filesystem().cat_file(f"{bucket}/ckpt-{kind}/{name}") for name in objects)


HOLD = textwrap.dedent("""
    import json, sys, time
    from streammix.engine.checkpoint import Checkpoint
    with Checkpoint(sys.argv[1], {"estimator": "X", "data": {}, "params": {}},
                    storage_options=json.loads(sys.argv[2])):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_lease_keeps_a_second_fit_out_until_its_holder_dies(s3, bucket):
    url = f"s3://{bucket}/held/"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url, json.dumps(s3.options)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointInUseError, match=rf"in use by process {holder.pid} on "
                                                       r".*lease runs until"):
            Checkpoint(url, {"estimator": "X", "data": {}, "params": {}},
                       storage_options=s3.options).__enter__()
    finally:
        holder.kill()  # no clean-up runs: its lease stays in the bucket
        holder.wait()
    assert s3.filesystem().exists(f"{bucket}/held/lock")
    # on the same host, a dead holder's lease is taken at once
    with Checkpoint(url, {"estimator": "X", "data": {}, "params": {}},
                    storage_options=s3.options):
        lease = json.loads(s3.filesystem().cat_file(f"{bucket}/held/lock"))
        assert lease["pid"] == os.getpid()
    assert not s3.filesystem().exists(f"{bucket}/held/lock")  # released


def _lease(s3, bucket, host, expires):
    s3.filesystem().pipe_file(f"{bucket}/other/lock", json.dumps(
        {"owner": uuid.uuid4().hex, "pid": 1, "host": host, "expires": expires}).encode())


def test_another_host_s_lease_is_waited_for_until_it_expires(s3, bucket, monkeypatch):
    monkeypatch.setattr(lease, "SETTLE_SECONDS", 0.05)
    url, spec = f"s3://{bucket}/other/", {"estimator": "X", "data": {}, "params": {}}
    _lease(s3, bucket, "elsewhere", time.time() + 600)
    with pytest.raises(CheckpointInUseError, match=r"process 1 on elsewhere"):
        Checkpoint(url, spec, storage_options=s3.options).__enter__()
    _lease(s3, bucket, "elsewhere", time.time() - 1)  # expired: its holder stopped renewing
    with Checkpoint(url, spec, storage_options=s3.options):
        pass
    for forever in (1e300, float("nan")):  # not a lease: taken over, never a crash
        s3.filesystem().pipe_file(f"{bucket}/other/lock", json.dumps(
            {"owner": "x", "pid": 1, "host": "elsewhere", "expires": forever}).encode())
        with Checkpoint(url, spec, storage_options=s3.options):
            pass


def test_a_fit_that_lost_its_lease_writes_nothing_more(s3, bucket):
    url, spec = f"s3://{bucket}/lost/", {"estimator": "X", "data": {}, "params": {}}
    with Checkpoint(url, spec, storage_options=s3.options) as checkpoint:
        checkpoint.record_pass(np.arange(3.0))
        lease = checkpoint.folder
        lease._stop.set()  # the holder stalls (no renewal)...
        lease._renewer.join()
        s3.filesystem().pipe_file(f"{bucket}/lost/lock", json.dumps(  # ...and another takes over
            {"owner": "x", "pid": 7, "host": "elsewhere", "expires": time.time() + 60}).encode())
        checkpoint.record_pass(np.arange(3.0))  # not known yet: until the next renewal
        assert lease._renew_once() is False  # the holder wakes up: the lease is not its own
        with pytest.raises(CheckpointInUseError, match=r"lost its lease \(process 7 on "
                                                       r"elsewhere took it\)"):
            checkpoint.record_pass(np.arange(3.0))
    assert json.loads(s3.filesystem().cat_file(f"{bucket}/lost/lock"))["pid"] == 7  # kept
