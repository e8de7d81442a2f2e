"""Parquet data in object storage, read through fsspec/s3fs from a real S3 server."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sklearn.cluster import KMeans as SkKMeans

import streammix as sm
from tests._compare import assert_labels_agree, same_stop
from tests._s3 import SECRET, put_parquet
from tests.conftest import make_blobs

pytestmark = pytest.mark.service  # an S3 server (moto)


@pytest.fixture
def bucket(s3, tmp_path):
    """A fresh bucket holding the blobs as two Parquet objects (row groups of 37 rows)."""
    X = make_blobs()
    name = put_parquet(s3, tmp_path, X)
    return name, X, tmp_path


@pytest.mark.parametrize("form", ["prefix", "glob", "list"])
def test_models_from_a_bucket_equal_the_local_ones(s3, bucket, form):
    name, X, local = bucket
    url = {"prefix": f"s3://{name}/blobs/", "glob": f"s3://{name}/blobs/*.parquet",
           "list": [f"s3://{name}/blobs/part-0.parquet", f"s3://{name}/blobs/part-1.parquet"]}[form]
    data = sm.read_parquet(url, storage_options=s3.options)
    assert data.n_rows == len(X) and data.feature_names == ("f0", "f1", "f2")
    here = sm.read_parquet([local / "part-0.parquet", local / "part-1.parquet"])
    gmm = sm.GaussianMixture(3, random_state=0).fit(data)
    np.testing.assert_allclose(gmm.means_, sm.GaussianMixture(3, random_state=0).fit(here).means_,
                               rtol=1e-12)
    init = X[[0, 300, 500]]
    km = sm.KMeans(3, init=init, n_init=1, storage_options=s3.options).fit(url)
    theirs = same_stop(km, SkKMeans(3, init=init, n_init=1).fit(X), X)
    np.testing.assert_allclose(km.cluster_centers_, theirs.cluster_centers_, rtol=1e-10)
    assert_labels_agree(km.predict(data).compute(), theirs.predict(X))


def test_missing_buckets_and_objects_are_clean_errors_without_secrets(s3, bucket):
    name, _, _ = bucket
    for url in (f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x/", f"s3://{name}/nothing/",
                f"s3://{name}/blobs/absent.parquet", f"s3://{name}/none-*.parquet"):
        with pytest.raises(sm.DataError) as error:
            sm.read_parquet(url, storage_options=s3.options)
        assert url.rstrip("/").split("/")[-1] in str(error.value) or url in str(error.value)
        assert SECRET not in str(error.value)
    model = sm.GaussianMixture(2, storage_options=s3.options)
    assert SECRET not in repr(model)


def test_the_command_line_reads_a_bucket_and_prints_no_secret(s3, bucket, tmp_path):
    import json

    from click.testing import CliRunner

    from streammix.cli import main

    name, _, _ = bucket
    options = ["--storage-option", f"key={s3.options['key']}",
               "--storage-option", f"secret={SECRET}",
               "--storage-option", "client_kwargs=" + json.dumps(s3.options["client_kwargs"])]
    runner = CliRunner()
    fit = runner.invoke(main, ["fit", f"s3://{name}/blobs/", "-k", "3", "--seed", "0", "-v",
                               "--checkpoint", f"s3://{name}/ckpt/", *options,
                               "-o", str(tmp_path / "m.npz")])
    assert fit.exit_code == 0, fit.output
    bad = runner.invoke(main, ["fit", f"s3://{name}/absent/", *options,
                               "-o", str(tmp_path / "n.npz")])
    assert bad.exit_code == 2 and "absent" in bad.output
    predict = runner.invoke(main, ["predict", str(tmp_path / "m.npz"), f"s3://{name}/blobs/",
                                   *options, "-o", str(tmp_path / "p.parquet")])
    assert predict.exit_code == 0, predict.output
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for text in (fit.output, bad.output, predict.output):
        assert SECRET not in text
    assert SECRET.encode() not in written  # model file, predictions
    fs = s3.filesystem()
    states = fs.find(f"{name}/ckpt/")
    assert any(p.endswith("checkpoint.json") for p in states) and len(states) > 3
    assert SECRET.encode() not in b"".join(fs.cat_file(p) for p in states)


def test_each_chunk_is_one_request_per_pass_and_cached_passes_read_nothing(s3, bucket,
                                                                            read_counter):
    name, X, _ = bucket
    data = sm.read_parquet(f"s3://{name}/blobs/", storage_options=s3.options, chunk_size=100)
    n_chunks = len(data.plan())
    init = X[[0, 300, 500]]

    def requests(cache, max_iter):
        read_counter.clear()
        before = sum(s3.gets(f"{name}/blobs/part-{i}.parquet") for i in range(2))
        sm.KMeans(3, init=init, n_init=1, max_iter=max_iter, tol=0, cache=cache).fit(data)
        return sum(s3.gets(f"{name}/blobs/part-{i}.parquet") for i in range(2)) - before

    # planning read the footers; a pass then asks for each chunk's byte ranges once
    streamed = requests(cache=False, max_iter=3)
    passes = set(read_counter.values())
    assert len(passes) == 1 and passes.pop() >= 2  # every chunk read once a pass
    assert streamed == sum(read_counter.values())  # one request per chunk read
    # with the cache, only the first pass reads: the same requests for 2 or 6 iterations
    assert requests(cache=True, max_iter=2) == requests(cache=True, max_iter=6) == n_chunks


def test_zarr_store_in_a_bucket(s3, tmp_path):
    import zarr

    X = make_blobs(seed=2)
    local = str(tmp_path / "x.zarr")
    array = zarr.create_array(store=local, shape=X.shape, chunks=(41, 3), dtype="f8")
    array[:] = X
    fs = s3.filesystem()
    name = f"zarr-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    fs.put(local, f"{name}/x.zarr", recursive=True)
    url = f"s3://{name}/x.zarr"
    source = sm.read_zarr(url, storage_options=s3.options)
    assert source.n_rows == len(X)
    ours = sm.GaussianMixture(3, random_state=0, storage_options=s3.options).fit(url)
    theirs = sm.GaussianMixture(3, random_state=0).fit(local)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-12)
    files = source.fingerprint()["files"]  # every object, with its size and version
    assert len(files) >= 2 and all(size > 0 for _, size, _ in files)
    with pytest.raises(sm.DataError, match=r"absent.zarr"):
        sm.read_zarr(f"s3://{name}/absent.zarr", storage_options=s3.options)


def test_transient_errors_are_retried_with_backoff_then_reported(monkeypatch):
    from streammix.io import storage

    monkeypatch.setattr(storage, "RETRY_DELAY", 0.001)
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "rows"

    assert storage.with_retries(flaky) == "rows"
    assert len(attempts) == 3
    attempts.clear()

    def down():
        attempts.append(1)
        raise TimeoutError("503 SlowDown")

    with pytest.raises(TimeoutError):
        storage.with_retries(down)
    assert len(attempts) == storage.READ_ATTEMPTS


def test_an_object_gone_after_planning_is_named_with_its_row_group(s3, bucket, monkeypatch):
    from streammix.io import storage

    monkeypatch.setattr(storage, "RETRY_DELAY", 0.001)
    name, _, _ = bucket
    data = sm.read_parquet(f"s3://{name}/blobs/", storage_options=s3.options)
    s3.filesystem().rm(f"{name}/blobs/part-1.parquet")
    with pytest.raises(sm.DataError, match=rf"s3://{name}/blobs/part-1.parquet, row group \d+: "
                                           r"cannot be read") as error:
        sm.GaussianMixture(2, random_state=0).fit(data)
    assert SECRET not in str(error.value)


def _cli_options(s3) -> list[str]:
    import json

    options = [f"key={s3.options['key']}", f"secret={SECRET}",
               "client_kwargs=" + json.dumps(s3.options["client_kwargs"])]
    return [arg for option in options for arg in ("--storage-option", option)]


def test_model_files_on_a_bucket(s3, bucket):
    from click.testing import CliRunner

    from streammix.cli import main

    name, X, _ = bucket
    model = sm.GaussianMixture(3, random_state=0, storage_options=s3.options).fit(X)
    url = f"s3://{name}/models/gmm.npz"
    model.save(url)  # one PUT, with the model's storage options
    loaded = sm.load(url, storage_options=s3.options)
    np.testing.assert_array_equal(loaded.means_, model.means_)
    assert loaded.storage_options is None  # runtime-only: never in the file
    assert SECRET.encode() not in s3.filesystem().cat_file(f"{name}/models/gmm.npz")
    runner = CliRunner()
    done = runner.invoke(main, ["fit", f"s3://{name}/blobs/", "-k", "2", *_cli_options(s3),
                                "-o", f"s3://{name}/models/cli.npz"])
    assert done.exit_code == 0, done.output
    info = runner.invoke(main, ["info", f"s3://{name}/models/cli.npz", *_cli_options(s3)])
    assert info.exit_code == 0 and "GaussianMixture" in info.output, info.output


def test_predict_and_score_write_committed_parts_to_the_bucket(s3, bucket):
    import json

    import pandas as pd
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from streammix.cli import main

    name, X, _ = bucket
    fs = s3.filesystem()
    runner = CliRunner()
    fit = runner.invoke(main, ["fit", f"s3://{name}/blobs/", "-k", "3", "--seed", "0",
                               "--contamination", "0.02", *_cli_options(s3),
                               "-o", f"s3://{name}/m.npz"])
    assert fit.exit_code == 0, fit.output
    model = sm.load(f"s3://{name}/m.npz", storage_options=s3.options)
    frame = pd.DataFrame(X, columns=["f0", "f1", "f2"])
    n_chunks = len(sm.read_parquet(f"s3://{name}/blobs/", storage_options=s3.options).plan())
    for command, out in (("predict", "labels"), ("score", "scores"), ("score", "scores")):
        done = runner.invoke(main, [command, f"s3://{name}/m.npz", f"s3://{name}/blobs/",
                                    *_cli_options(s3), "-o", f"s3://{name}/{out}/"])
        assert done.exit_code == 0, done.output
        assert SECRET not in done.output
    for out in ("labels", "scores"):  # the second score replaced the first, whole
        listed = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{name}/{out}/"))
        assert listed == ["_SUCCESS"] + [f"part-{i:06d}.parquet" for i in range(n_chunks)]
        manifest = json.loads(fs.cat_file(f"{name}/{out}/_SUCCESS"))
        assert manifest["rows"] == len(X) and len(manifest["parts"]) == n_chunks
    labels = pq.read_table(f"{name}/labels/", filesystem=fs)  # the parts, in order
    # the command runs model.predict's per-row code on its chunks: the same labels
    np.testing.assert_array_equal(labels["cluster"].to_numpy(), model.predict(frame))
    scores = pq.read_table(f"{name}/scores/", filesystem=fs)
    np.testing.assert_allclose(scores["score"].to_numpy(), model.score_samples(frame), rtol=1e-12)
    assert scores["anomaly"].to_numpy().sum() == round(0.02 * len(X))
    written = b"".join(fs.cat_file(p) for p in fs.find(name))
    assert SECRET.encode() not in written
