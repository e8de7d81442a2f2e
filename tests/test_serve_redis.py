"""The Redis Streams consumer against a real redis-server on 127.0.0.1 (started here)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import streammix as sm

redis = pytest.importorskip("redis")
pytestmark = [pytest.mark.service, pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (scripts/test installs it)")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1 at a free port, its data (append-only file) in ``directory``."""

    def __init__(self, directory):
        self.directory, self.port = str(directory), _free_port()
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             self.directory, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port)


@pytest.fixture
def server(tmp_path):
    running = RedisServer(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def model_file(tmp_path):
    X = np.random.default_rng(0).normal(size=(2000, 2))
    scorer = sm.AnomalyScorer(sm.GaussianMixture(2, random_state=0).fit(X),
                              contamination=0.02).fit(X)
    scorer.save(tmp_path / "m.npz")
    return tmp_path / "m.npz", scorer


def outputs_by_entry(client, stream="out"):
    found = {}
    for _entry_id, fields in client.xrange(stream):
        fields = {k.decode(): v.decode() for k, v in fields.items()}
        found.setdefault(fields["entry"], []).append(fields)
    return found


def test_flat_json_and_malformed_entries_get_one_output_each(server, model_file):
    from streammix.serve.redis_stream import StreamConsumer

    _path, scorer = model_file
    client = server.client()
    ids = [client.xadd("in", {"id": 1, "x0": 0.1, "x1": -0.3}),
           client.xadd("in", {"data": json.dumps({"id": 2, "x0": 50.0, "x1": 50.0})}),
           client.xadd("in", {"id": 3, "x0": "n/a", "x1": 0}),
           client.xadd("in", {"data": "{not json"})]
    consumer = StreamConsumer(scorer, client, "in", "g", "c1", "out")
    assert consumer.run(max_entries=4) == 4
    found = outputs_by_entry(client)
    assert sorted(found) == sorted(i.decode() for i in ids)
    assert all(len(v) == 1 for v in found.values())
    first = found[ids[0].decode()][0]
    expected = next(iter(scorer.score_records([{"id": "1", "x0": 0.1, "x1": -0.3}])))
    assert float(first["score"]) == pytest.approx(expected["score"], rel=1e-12)
    assert found[ids[1].decode()][0]["anomaly"] == "true"
    assert "error" in found[ids[2].decode()][0] and "error" in found[ids[3].decode()][0]
    assert client.xpending("in", "g")["pending"] == 0  # all acknowledged


def _consumer(server, path, name):
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "streammix"), "serve", str(path),
         "--redis", server.url, "--stream", "in", "--group", "g", "--consumer", name,
         "--output", "out", "--batch", "50", "--claim-idle-ms", "500"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_all_done(client, total, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = client.xinfo_groups("in")
        if groups and groups[0]["pending"] == 0 and \
                len(outputs_by_entry(client)) >= total:
            return
        time.sleep(0.2)
    raise AssertionError("the consumers did not finish")


def test_killed_consumers_and_a_restarted_redis_lose_and_duplicate_nothing(server, model_file):
    path, _ = model_file
    client = server.client()
    rng = np.random.default_rng(1)
    total = 0

    def feed(n):
        nonlocal total
        pipe = client.pipeline()
        for row in rng.normal(size=(n, 2)):
            pipe.xadd("in", {"id": total, "x0": float(row[0]), "x1": float(row[1])})
            total += 1
        pipe.execute()

    feed(6000)
    held = []
    for delay in (0.0, 0.03, 0.07):  # kill -9 at several moments of its work
        written = client.xlen("out") if client.exists("out") else 0
        child = _consumer(server, path, "c1")
        deadline = time.monotonic() + 60
        while (client.xlen("out") if client.exists("out") else 0) < written + 100 and \
                time.monotonic() < deadline:
            time.sleep(0.01)  # it is scoring and writing now
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        held.append(client.xpending("in", "g")["pending"])
        feed(500)
    assert max(held) > 0  # it died holding entries
    consumers = [_consumer(server, path, "c1"), _consumer(server, path, "c2")]  # two share
    time.sleep(1.0)
    server.stop()  # Redis goes away mid-stream and comes back with its data
    time.sleep(1.0)
    server.start()
    client = server.client()
    feed(500)
    try:
        _wait_all_done(client, total)
    finally:
        for child in consumers:
            child.terminate()
            child.wait(timeout=20)
    found = outputs_by_entry(client)
    inputs = [entry_id.decode() for entry_id, _ in client.xrange("in")]
    assert len(inputs) == total == 8000
    assert not any("error" in outputs[0] for outputs in found.values())  # all scored
    assert sorted(found) == sorted(inputs)  # none lost
    assert all(len(outputs) == 1 for outputs in found.values())  # none duplicated


def test_a_stream_that_does_not_exist_yet_and_adaptive_snapshots_after_acks(server, model_file,
                                                                          tmp_path):
    import threading

    from streammix.serve.redis_stream import StreamConsumer

    _, scorer = model_file
    client = server.client()
    scoring = scorer.adapt(window=200)
    consumer = StreamConsumer(scoring, client, "later", "g", "c1", "out", batch=50,
                              snapshot=tmp_path / "state.npz", snapshot_every=100)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (consumer.run(max_entries=500), done.set()))
    thread.start()  # waits on a stream nobody has written to yet
    time.sleep(0.5)
    assert not done.is_set()
    rng = np.random.default_rng(3)
    for i, row in enumerate(rng.normal(size=(500, 2))):
        client.xadd("later", {"id": i, "x0": float(row[0]), "x1": float(row[1])})
    thread.join(timeout=60)
    assert done.is_set() and len(outputs_by_entry(client)) == 500
    resumed = scorer.adapt(window=200, snapshot=tmp_path / "state.npz")
    assert resumed.resumed and resumed.records == 500  # the last snapshot, after the last ack
