"""Denied access on a real S3 server that checks credentials and IAM policies (moto)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import streammix as sm
from streammix.cli import main
from streammix.exceptions import CheckpointError
from tests._s3 import start_s3

pytestmark = pytest.mark.service  # an S3 server (moto) that checks credentials

#: Requests made before the server starts checking: user, key, bucket, object.
SETUP_REQUESTS = 4


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """A bucket holding one Parquet object, and a user with no policy: it may do nothing."""
    import boto3

    server = start_s3(tmp_path_factory.mktemp("s3-auth") / "moto.log",
                      auth_after=SETUP_REQUESTS)
    try:
        admin = {"endpoint_url": server.endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
        iam, s3 = boto3.client("iam", **admin), boto3.client("s3", **admin)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        s3.create_bucket(Bucket="locked")
        buffer = io.BytesIO()
        pq.write_table(pa.table({"a": np.arange(10.0), "b": np.ones(10)}), buffer)
        s3.put_object(Bucket="locked", Key="data/x.parquet", Body=buffer.getvalue())
        options = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"],
                   "client_kwargs": {"endpoint_url": server.endpoint}}
        yield options
    finally:
        server.stop()


@pytest.mark.parametrize("url", ["s3://locked/data/", "s3://locked/data/x.parquet",
                                 "s3://locked/data/*.parquet"])
def test_reading_without_access_is_a_clean_error_before_any_pass(locked, url):
    with pytest.raises(sm.DataError, match=r"access denied with these credentials") as error:
        sm.GaussianMixture(2).set_params(storage_options=locked).fit(url)
    assert locked["secret"] not in str(error.value)


def test_unknown_credentials_are_named_as_such(locked):
    with pytest.raises(sm.DataError, match=r"locked/data/: access denied .*Access Key Id"):
        sm.read_parquet("s3://locked/data/", storage_options={**locked, "key": "who"})


def test_writing_without_access_fails_cleanly_everywhere(locked):
    X = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(CheckpointError, match=r"s3://locked/ckpt: cannot take its lease "
                                                 r"\(PermissionError: Access Denied\)"):
        sm.KMeans(2, checkpoint="s3://locked/ckpt/", storage_options=locked).fit(X)
    model = sm.KMeans(2, random_state=0, storage_options=locked).fit(X)
    with pytest.raises(PermissionError, match=r"s3://locked/model.npz: cannot be written "
                                              r"\(PermissionError: Access Denied\)"):
        model.save("s3://locked/model.npz")
    from streammix.scoring import predict_to_parquet

    with pytest.raises(sm.DataError, match=r"s3://locked/labels: .*not accessible"):
        predict_to_parquet(model, X, "s3://locked/labels/")
    options = [f"key={locked['key']}", f"secret={locked['secret']}",
               'client_kwargs={"endpoint_url": "' + locked["client_kwargs"]["endpoint_url"] + '"}']
    flags = [arg for option in options for arg in ("--storage-option", option)]
    runner = CliRunner()
    for args in (["fit", "s3://locked/data/", "-k", "2", "-o", "s3://locked/m.npz"],
                 ["info", "s3://locked/m.npz"]):
        done = runner.invoke(main, [*args, *flags])
        assert done.exit_code == 2 and done.output.startswith("Error: "), done.output
        assert len(done.output.strip().splitlines()) == 1, done.output
        assert "locked" in done.output and locked["secret"] not in done.output
