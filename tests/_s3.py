"""Start and stop a real S3-compatible server (moto's server mode) on 127.0.0.1.

Used through s3fs exactly as S3 is, with credentials of its own: the tests
check that they never appear in anything streammix writes or prints.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

#: Credentials the tests give; moto accepts any. The secret is searched for in outputs.
KEY, SECRET = "streammix-test-key", "s3cr3t-never-printed-5b1e"


@dataclass
class S3Server:
    process: subprocess.Popen
    endpoint: str

    @property
    def options(self) -> dict:
        """storage_options for s3fs: this endpoint and the test credentials."""
        return {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": self.endpoint}}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.options, skip_instance_cache=True)

    log_path: str = ""

    def gets(self, key: str) -> int:
        """GET requests the server has answered for object ``key`` (``bucket/path``)."""
        with open(self.log_path) as log:
            return sum(f"GET /{key} " in line for line in log)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_s3(log_path, *, auth_after: int | None = None) -> S3Server:
    """``moto_server`` on 127.0.0.1 at a free port; waits until it answers.

    With ``auth_after=N``, the server checks credentials and IAM policies from its
    (N+1)-th request on (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``): the first N set
    up users and buckets.
    """
    port = _free_port()
    log = open(log_path, "w")  # the server writes to it until stopped
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "1", "PYTHONUNBUFFERED": "1",
             **({} if auth_after is None else {"INITIAL_NO_AUTH_ACTION_COUNT": str(auth_after)})})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return S3Server(process, f"http://127.0.0.1:{port}", str(log_path))
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("moto server did not start within 60 s")


def put_parquet(server: S3Server, tmp_path, X, *, parts=2, row_group_size=37) -> str:
    """A fresh bucket holding ``X`` as ``parts`` Parquet objects under ``blobs/``; its name."""
    import uuid

    from tests.conftest import write_table

    fs = server.filesystem()
    name = f"data-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    for i, rows in enumerate(np.array_split(np.arange(len(X)), parts)):
        local = write_table(tmp_path / f"part-{i}.parquet", X[rows], row_group_size)
        fs.put(str(local), f"{name}/blobs/part-{i}.parquet")
    return name
