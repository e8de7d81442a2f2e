"""A real Dask cluster: a scheduler and two worker processes on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

import streammix as sm
from tests._cluster import start_cluster
from tests._compare import same_stop

pytestmark = pytest.mark.service  # a scheduler and worker processes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two worker processes on 127.0.0.1, stopped afterwards."""
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield running.address
    finally:
        running.stop()


@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_fit_on_cluster_equals_embedded_run(cluster, blobs_parquet, init_params):
    params = {"n_components": 3, "init_params": init_params, "random_state": 4,
              "chunk_size": 60, "tol": 1e-6}
    local = sm.GaussianMixture(**params).fit(blobs_parquet)
    remote = sm.GaussianMixture(**params, scheduler=cluster).fit(blobs_parquet)
    # other processes, other BLAS threads: equal to rounding, so within one iteration
    local = same_stop(remote, local, blobs_parquet)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(remote, name), getattr(local, name), rtol=1e-9)
    np.testing.assert_allclose(remote.lower_bound_, local.lower_bound_, rtol=1e-9)


def test_bayesian_mixture_on_cluster_equals_embedded_run(cluster, blobs_parquet):
    params = {"n_components": 5, "random_state": 3, "chunk_size": 60, "tol": 1e-6,
              "n_init": 2, "init_params": "k-means++"}
    local = sm.BayesianGaussianMixture(**params).fit(blobs_parquet)
    remote = sm.BayesianGaussianMixture(**params, scheduler=cluster).fit(blobs_parquet)
    local = same_stop(remote, local, blobs_parquet)
    assert remote.n_iter_ > 3
    for name in ("weights_", "means_", "covariances_", "degrees_of_freedom_"):
        np.testing.assert_allclose(getattr(remote, name), getattr(local, name), rtol=1e-9)
    np.testing.assert_allclose(remote.lower_bound_, local.lower_bound_, rtol=1e-9)


def test_active_client_is_used_and_in_memory_data_works(cluster, blobs):
    from distributed import Client

    def transitions(dask_scheduler):
        return dask_scheduler.transition_counter

    local = sm.GaussianMixture(3, random_state=0, chunk_size=100).fit(blobs)
    with Client(cluster) as client:  # becomes the default client
        before = client.run_on_scheduler(transitions)
        remote = sm.GaussianMixture(3, random_state=0, chunk_size=100).fit(blobs)
        after = client.run_on_scheduler(transitions)
    assert after - before > 6 * remote.n_iter_  # every pass ran on the cluster
    np.testing.assert_allclose(remote.means_, local.means_, rtol=1e-9)


def test_kmeans_and_minibatch_on_cluster_equal_embedded_runs(cluster, blobs_parquet):
    params = {"n_clusters": 3, "init": "k-means||", "random_state": 2, "chunk_size": 60}
    local = sm.KMeans(**params).fit(blobs_parquet)
    remote = sm.KMeans(**params, scheduler=cluster).fit(blobs_parquet)
    local = same_stop(remote, local, blobs_parquet)
    np.testing.assert_allclose(remote.cluster_centers_, local.cluster_centers_, rtol=1e-9)
    # two workers of one thread: the same steps as two local threads
    mini = {"n_clusters": 3, "random_state": 2, "batch_size": 50, "max_iter": 2}
    local = sm.MiniBatchKMeans(**mini, n_workers=2).fit(blobs_parquet)
    remote = sm.MiniBatchKMeans(**mini, scheduler=cluster).fit(blobs_parquet)
    np.testing.assert_allclose(remote.cluster_centers_, local.cluster_centers_, rtol=1e-9)


def test_fit_from_a_bucket_on_the_cluster_equals_the_embedded_run(cluster, s3, tmp_path):
    """Workers read the objects themselves (the source travels, the rows do not)."""
    from tests._s3 import put_parquet
    from tests.conftest import make_blobs

    name = put_parquet(s3, tmp_path, make_blobs(seed=5))
    params = {"n_components": 3, "random_state": 1, "chunk_size": 60,
              "storage_options": s3.options}
    local = sm.GaussianMixture(**params).fit(f"s3://{name}/blobs/")
    ckpt = f"s3://{name}/ckpt/"  # the checkpoint in the bucket too
    remote = sm.GaussianMixture(**params, scheduler=cluster, checkpoint=ckpt).fit(
        f"s3://{name}/blobs/")
    local = same_stop(remote, local, f"s3://{name}/blobs/")
    np.testing.assert_allclose(remote.means_, local.means_, rtol=1e-9)
    before = sum(s3.gets(f"{name}/blobs/part-{i}.parquet") for i in range(2))
    replayed = sm.GaussianMixture(**params, scheduler=cluster, checkpoint=ckpt).fit(
        f"s3://{name}/blobs/")
    assert sum(s3.gets(f"{name}/blobs/part-{i}.parquet") for i in range(2)) - before == 2
    # a replay of the checkpoint in the bucket (no pass): the same bits
    np.testing.assert_array_equal(replayed.means_, remote.means_)


def test_workers_keep_the_decoded_chunks_so_later_passes_read_nothing(cluster, s3, tmp_path):
    from tests._s3 import put_parquet
    from tests.conftest import make_blobs

    X = make_blobs(seed=6)
    name = put_parquet(s3, tmp_path, X)
    url = f"s3://{name}/blobs/"
    n_chunks = len(sm.read_parquet(url, storage_options=s3.options, chunk_size=60).plan())

    def fit(cache, max_iter):
        before = sum(s3.gets(f"{name}/blobs/part-{i}.parquet") for i in range(2))
        model = sm.KMeans(3, init=X[:3], n_init=1, max_iter=max_iter, tol=0,
                          chunk_size=60, cache=cache, storage_options=s3.options,
                          scheduler=cluster).fit(url)
        return model, sum(s3.gets(f"{name}/blobs/part-{i}.parquet") for i in range(2)) - before

    # planning reads the 2 footers; the first pass each chunk once, on some worker
    cached, requests = fit("auto", 2)  # small data: it fits in the workers' memory
    assert requests == 2 + n_chunks
    again, more = fit("auto", 6)
    assert more == 2 + n_chunks and again.n_iter_ > cached.n_iter_  # later passes read nothing
    streamed, streamed_requests = fit(False, 6)
    assert streamed_requests >= 2 * n_chunks  # without the cache every pass reads
    embedded = sm.KMeans(3, init=X[:3], n_init=1, max_iter=6, tol=0, chunk_size=60,
                         storage_options=s3.options).fit(url)
    for model in (again, streamed):
        np.testing.assert_allclose(model.cluster_centers_, embedded.cluster_centers_,
                                   rtol=1e-12)


def test_later_passes_run_where_their_chunk_is(cluster, tmp_path):
    """Decoded chunks are dealt to both workers and stay where they are: after many passes
    every chunk is still held by exactly one worker (work stealing copied none)."""
    from collections import Counter

    from streammix.core import kmeans as km
    from streammix.engine import Engine
    from tests.conftest import make_blobs, write_table

    X = make_blobs(n=30_000, seed=7)
    write_table(tmp_path / "x.parquet", X, 1000)
    source = sm.read_parquet(tmp_path / "x.parquet", chunk_size=1000)
    with Engine(cluster, cache=True) as engine:
        params = km.LloydParams(X[:3])
        first = engine.map_reduce(km.lloyd_stats, params, source)
        for _ in range(20):
            again = engine.map_reduce(km.lloyd_stats, params, source)
        futures = engine._worker_caches[id(source)][1]
        holders = engine.client.who_has(list(futures.values()))
    assert len(futures) == len(source.plan())
    assert all(len(where) == 1 for where in holders.values())  # no copies
    shares = Counter(where[0] for where in holders.values())
    assert len(shares) == 2 and min(shares.values()) >= len(futures) // 3  # both hold chunks
    np.testing.assert_array_equal(again.counts, first.counts)  # the same pass, repeated


def test_outputs_are_written_by_the_workers_and_committed(cluster, s3, tmp_path, monkeypatch):
    """The client cannot write a part here (patched to fail in this process only)."""
    import pyarrow.parquet as pq

    from streammix.io.output import PartitionedOutput
    from streammix.scoring import predict_to_parquet
    from tests._s3 import put_parquet
    from tests.conftest import make_blobs

    X = make_blobs(seed=7)
    name = put_parquet(s3, tmp_path, X)

    def not_here(*args):
        raise AssertionError("a part was written by the client")

    monkeypatch.setattr(PartitionedOutput, "write_part", not_here)
    model = sm.KMeans(3, random_state=0, chunk_size=60).fit(X)
    model.set_params(scheduler=cluster, storage_options=s3.options)
    rows = predict_to_parquet(model, f"s3://{name}/blobs/", f"s3://{name}/labels/")
    fs = s3.filesystem()
    n_chunks = len(sm.read_parquet(f"s3://{name}/blobs/", chunk_size=60,
                                   storage_options=s3.options).plan())
    assert rows == len(X) and len(fs.ls(f"{name}/labels/")) == n_chunks + 1  # + _SUCCESS
    labels = pq.read_table(f"{name}/labels/", filesystem=fs)["cluster"].to_numpy()
    # the same centres, the same per-row assignment (a row's label does not depend on its chunk)
    np.testing.assert_array_equal(labels, model.predict(X))
