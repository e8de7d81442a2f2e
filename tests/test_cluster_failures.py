"""Cluster failures: a lost worker is absorbed; a lost scheduler is resumed from the checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import streammix as sm
from tests._cluster import start_cluster

GMM = {"n_components": 3, "tol": 0.0, "max_iter": 80, "chunk_size": 40, "random_state": 0}


def assert_same_gmm(a, b):
    assert a.n_iter_ == b.n_iter_ == GMM["max_iter"]  # tol=0: a count, not a rounding decision
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, err_msg=name)


pytestmark = [pytest.mark.service,  # schedulers and worker processes, killed
              pytest.mark.filterwarnings("ignore::streammix.ConvergenceWarning")]  # tol=0


def test_killed_worker_is_absorbed_and_the_model_is_unchanged(tmp_path, blobs_parquet):
    expected = sm.GaussianMixture(**GMM).fit(blobs_parquet)
    cluster = start_cluster(tmp_path / "cluster", 2, nanny=False)
    try:
        started = time.monotonic()
        killer = threading.Timer(2.0, cluster.workers[0].send_signal, [signal.SIGKILL])
        killer.start()
        model = sm.GaussianMixture(**GMM, scheduler=cluster.address).fit(blobs_parquet)
        killer.join()
        assert time.monotonic() - started > 2.0  # the worker died while the fit ran
        assert cluster.workers[0].wait(timeout=10) == -signal.SIGKILL
    finally:
        cluster.stop()
    assert_same_gmm(model, expected)


STREAMMIX = os.path.join(os.path.dirname(sys.executable), "streammix")


def test_lost_scheduler_fails_clearly_and_the_checkpoint_continues(tmp_path, blobs_parquet):
    expected = sm.GaussianMixture(**GMM).fit(blobs_parquet)
    ckpt = tmp_path / "ckpt"
    first = start_cluster(tmp_path / "first", 2)
    try:
        child = subprocess.Popen(  # the command line, as a nightly job runs it
            [STREAMMIX, "fit", blobs_parquet, "-k", "3", "--tol", "0", "--max-iter", "80",
             "--chunk-size", "40", "--seed", "0", "--scheduler", first.address,
             "--checkpoint", ckpt, "-o", tmp_path / "model.npz", "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        def snapshot():  # a state of the EM loop, after the k-means init loop
            return list(ckpt.glob("loop-000001.*.npz"))

        deadline = time.monotonic() + 120
        while not snapshot() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert snapshot(), child.communicate()
        first.scheduler.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=120)
    finally:
        first.stop()
    assert child.returncode == 2, (out, err)
    # One line, without distributed's reconnection logs and tracebacks.
    assert err.startswith("Error: lost the Dask scheduler") and "checkpoint" in err
    assert len(err.strip().splitlines()) == 1, err
    second = start_cluster(tmp_path / "second", 2)
    try:
        resumed = sm.GaussianMixture(**GMM, scheduler=second.address, checkpoint=ckpt)
        resumed.fit(blobs_parquet)
    finally:
        second.stop()
    assert_same_gmm(resumed, expected)
    assert os.path.exists(ckpt / "checkpoint.json")


def test_a_dead_worker_s_cached_chunks_are_read_again_and_the_model_is_unchanged(tmp_path, s3):
    """Over S3 with the workers' chunk cache: kill one worker mid-fit."""
    from tests._s3 import put_parquet
    from tests.conftest import make_blobs

    name = put_parquet(s3, tmp_path, make_blobs())
    url = f"s3://{name}/blobs/"
    params = {**GMM, "storage_options": s3.options}
    expected = sm.GaussianMixture(**params).fit(url)
    n_chunks = len(sm.read_parquet(url, storage_options=s3.options, chunk_size=40).plan())

    def requests():
        return sum(s3.gets(f"{name}/blobs/part-{i}.parquet") for i in range(2))

    cluster = start_cluster(tmp_path / "cluster", 2, nanny=False)
    try:
        before = requests()

        def kill_after_the_first_pass():  # when every chunk has been read (and cached) once
            deadline = time.monotonic() + 60
            while requests() - before < 2 + n_chunks and time.monotonic() < deadline:
                time.sleep(0.02)
            cluster.workers[0].send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_after_the_first_pass)
        killer.start()
        model = sm.GaussianMixture(**params, scheduler=cluster.address, cache=True).fit(url)
        killer.join()
        assert cluster.workers[0].wait(timeout=10) == -signal.SIGKILL
        read = requests() - before
    finally:
        cluster.stop()
    assert_same_gmm(model, expected)
    # the dead worker's chunks (only they) were read again, not every chunk on every pass
    assert 2 + n_chunks < read < 4 * n_chunks
