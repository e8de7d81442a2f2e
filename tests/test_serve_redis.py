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
    from streammix.scoring.redis import StreamConsumer

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


def test_poison_entries_are_error_outputs_and_stop_nothing(server, model_file):
    """The red team's poison pills (a lone surrogate id, ids beyond 64 bits) crashed the
    consumer at every start; each is now one error output, and the stream goes on."""
    from streammix.scoring.redis import StreamConsumer

    _path, scorer = model_file
    client = server.client()
    poison = ['{"id": "\\ud800", "x0": 0, "x1": 0}', '{"id": 1' + "0" * 400 + ', "x0": 0}',
              '["\\udfff", 1]']
    ids = []
    for i, text in enumerate(poison):
        ids.append((client.xadd("in", {"data": text}), "error"))
        ids.append((client.xadd("in", {"id": i, "x0": 0.1, "x1": 0.2}), "score"))
    consumer = StreamConsumer(scorer, client, "in", "g", "c1", "out", batch=3)
    assert consumer.run(max_entries=len(ids)) == len(ids)
    found = outputs_by_entry(client)
    assert all(len(found[entry.decode()]) == 1 and kind in found[entry.decode()][0]
               for entry, kind in ids)
    assert client.xpending("in", "g")["pending"] == 0


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

    feed(30000)  # enough that each kill lands while it is busy
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
    assert len(inputs) == total == 32000
    assert not any("error" in outputs[0] for outputs in found.values())  # all scored
    assert sorted(found) == sorted(inputs)  # none lost
    assert all(len(outputs) == 1 for outputs in found.values())  # none duplicated


def test_a_stream_that_does_not_exist_yet_and_adaptive_snapshots_after_acks(server, model_file,
                                                                          tmp_path):
    import threading

    from streammix.scoring.redis import StreamConsumer

    _, scorer = model_file
    client = server.client()
    scoring = scorer.adapt(window=256)
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
    resumed = scorer.adapt(window=256, snapshot=tmp_path / "state.npz")
    assert resumed.resumed and resumed.records == 500  # the last snapshot, after the last ack


def test_adaptive_drift_events_are_output_entries(server, model_file):
    """A drift alarm is written with the output of the entry it fired at (docs/serving.md:
    --adapt works on Redis as on stdin): the same events stdin gets, in the same places."""
    from streammix.scoring.adaptive import PageHinkley
    from streammix.scoring.redis import StreamConsumer

    _path, scorer = model_file
    rng = np.random.default_rng(3)
    rows = np.concatenate([rng.normal(size=(300, 2)), rng.normal(6.0, 1.0, size=(200, 2))])
    records = [{"id": i, "x0": float(x), "x1": float(y)} for i, (x, y) in enumerate(rows)]

    def adaptive():
        return scorer.adapt(window=1000, drift=PageHinkley(warmup=100, threshold=20.0))

    expected = [o for o in adaptive().score_batch(records) if "event" in o]
    assert expected, "the shift must raise an alarm"
    client = server.client()
    ids = [client.xadd("in", {"data": json.dumps(r)}).decode() for r in records]
    consumer = StreamConsumer(adaptive(), client, "in", "g", "c1", "out", batch=500)
    assert consumer.run(max_entries=len(records)) == len(records)
    found = outputs_by_entry(client)
    events = [(entry, fields) for entry, written in found.items() for fields in written
              if "event" in fields]
    assert [json.loads(f["after_id"]) for _, f in events] == [e["after_id"] for e in expected]
    assert all(entry == ids[json.loads(f["after_id"])] for entry, f in events)
    assert sum(len(w) for w in found.values()) == len(records) + len(expected)


def test_an_entry_answered_by_another_consumer_writes_nothing_and_redis_holds_only_streams(
        server, model_file):
    """Exactly once with no per-entry state: a consumer that read entries, stalled, and
    lost them to a claimant writes nothing for them when it comes back; Redis holds the
    two streams only, so an eviction policy has nothing else to evict."""
    from streammix.scoring.redis import StreamConsumer

    _, scorer = model_file
    client = server.client()
    client.config_set("maxmemory", 64 << 20)
    client.config_set("maxmemory-policy", "allkeys-lru")
    for i, row in enumerate(np.random.default_rng(4).normal(size=(300, 2))):
        client.xadd("in", {"id": i, "x0": float(row[0]), "x1": float(row[1])})
    slow = StreamConsumer(scorer, client, "in", "g", "slow", "out", batch=100)
    slow._ensure_group()
    held, _ = slow._next_entries(backlog=False)  # read, then stalled before writing
    assert len(held) == 100
    fast = StreamConsumer(scorer, client, "in", "g", "fast", "out", batch=100,
                          claim_idle_ms=1, claim_every=3600.0)  # one claim, at its start
    time.sleep(0.01)
    assert fast.run(max_entries=300) == 300  # claims the stalled entries, answers all
    assert slow._write(held, slow._score(held)) == 0  # too late: nothing written
    found = outputs_by_entry(client)
    assert len(found) == 300 and all(len(v) == 1 for v in found.values())
    assert client.xpending("in", "g")["pending"] == 0
    assert sorted(k.decode() for k in client.keys("*")) == ["in", "out"]


def test_an_output_key_of_another_type_acknowledges_nothing(server, model_file):
    from streammix.scoring.redis import OutputStreamError, StreamConsumer

    _, scorer = model_file
    client = server.client()
    client.set("out", "x")
    ids = [client.xadd("in", {"id": i, "x0": 0.1 * i, "x1": 0.0}) for i in range(50)]
    consumer = StreamConsumer(scorer, client, "in", "g", "c1", "out", batch=20)
    with pytest.raises(OutputStreamError, match="'out' holds a string"):
        consumer.run(max_entries=50)
    group = client.xinfo_groups("in")[0]
    assert group["entries-read"] >= 20 and group["pending"] == group["entries-read"]  # no ack
    client.delete("out")
    again = StreamConsumer(scorer, client, "in", "g", "c1", "out", batch=20)
    assert again.run(max_entries=50) == 50
    found = outputs_by_entry(client)
    assert sorted(found) == sorted(i.decode() for i in ids)
    assert all(len(v) == 1 for v in found.values())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_clean_stop_writes_the_adaptive_snapshot(server, model_file, tmp_path, signum):
    """SIGTERM and SIGINT end the consumer cleanly: the entries in hand are answered and
    acknowledged, then the snapshot is written, long before --snapshot-every is due."""
    path, scorer = model_file
    client = server.client()
    for i, row in enumerate(np.random.default_rng(6).normal(size=(300, 2))):
        client.xadd("in", {"id": i, "x0": float(row[0]), "x1": float(row[1])})
    snapshot = tmp_path / "state.npz"
    child = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "streammix"), "serve", str(path),
         "--redis", server.url, "--stream", "in", "--group", "g", "--output", "out",
         "--adapt", "--snapshot", str(snapshot), "--snapshot-every", "1000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(outputs_by_entry(client)) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not snapshot.exists()  # not due yet
    child.send_signal(signum)
    assert child.wait(timeout=30) == 0, child.stderr.read()
    assert client.xpending("in", "g")["pending"] == 0
    resumed = scorer.adapt(snapshot=snapshot)
    assert resumed.resumed and resumed.records == 300


def test_http_refuses_adaptive_options_in_one_line(tmp_path, model_file):
    path, _ = model_file
    for extra in (["--adapt"], ["--snapshot", str(tmp_path / "s.npz")]):
        done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "streammix"),
                               "serve", str(path), "--http", "127.0.0.1:1", *extra],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "HTTP serves a fixed model" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("remove", ["group", "stream"])
def test_a_group_destroyed_mid_run_stops_the_consumer_in_one_line(server, model_file, remove):
    import threading

    from streammix.scoring.redis import ConsumerGroupError, StreamConsumer

    _, scorer = model_file
    client = server.client()
    for i in range(100):
        client.xadd("in", {"id": i, "x0": 0.1, "x1": 0.2})
    consumer = StreamConsumer(scorer, client, "in", "g", "c1", "out", batch=50)
    failed = []

    def consume():
        try:
            consumer.run()
        except ConsumerGroupError as exc:
            failed.append(str(exc))

    thread = threading.Thread(target=consume)
    thread.start()
    deadline = time.monotonic() + 30
    while len(outputs_by_entry(client)) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    if remove == "group":
        client.xgroup_destroy("in", "g")
    else:
        client.delete("in")
    thread.join(timeout=30)
    assert not thread.is_alive() and failed and "'g' of stream 'in' no longer exists" in failed[0]
    found = outputs_by_entry(client)
    assert len(found) == 100 and all(len(v) == 1 for v in found.values())


def test_a_group_lost_during_a_reconnect_is_not_made_again(server, model_file):
    """Made again from the stream's start, a lost group would deliver every entry a
    second time: after an outage the consumer stops instead (found by review)."""
    from streammix.scoring.redis import ConsumerGroupError, StreamConsumer

    _, scorer = model_file
    client = server.client()
    for i in range(10):
        client.xadd("in", {"id": i, "x0": 0.1, "x1": 0.2})
    consumer = StreamConsumer(scorer, client, "in", "g", "c1", "out", batch=5)
    real, calls = consumer._next_entries, []

    def blip(backlog, count=None):  # the group goes away, then the connection drops once
        calls.append(backlog)
        if len(calls) == 3:
            client.xgroup_destroy("in", "g")
            raise redis.ConnectionError("a blip")
        return real(backlog, count)

    consumer._next_entries = blip
    with pytest.raises(ConsumerGroupError):
        consumer.run(max_entries=100)
    assert client.xinfo_groups("in") == []  # not made again
    found = outputs_by_entry(client)
    assert all(len(v) == 1 for v in found.values())


def test_a_custom_id_field_stays_text_in_flat_entries(server, model_file):
    from streammix.scoring.redis import StreamConsumer

    _, scorer = model_file
    client = server.client()
    client.xadd("in", {"key": "00123", "x0": 0.1, "x1": 0.2})
    client.xadd("in", {"key": "1e3", "x0": "n/a", "x1": 0.2})
    StreamConsumer(scorer, client, "in", "g", "c1", "out", id_field="key").run(max_entries=2)
    outputs = [f for written in outputs_by_entry(client).values() for f in written]
    assert [o["id"] for o in outputs] == ["00123", "1e3"] and "error" in outputs[1]


def test_a_clean_stop_answers_the_batch_read_ahead(server, model_file):
    """The next micro-batch is read while one is scored; a stop answers it too, so
    nothing is left pending (another consumer would wait claim_idle_ms for it)."""
    from streammix.scoring.redis import StreamConsumer

    _, scorer = model_file
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(3000):
        pipe.xadd("in", {"id": i, "x0": 0.1, "x1": 0.2})
    pipe.execute()
    consumer = StreamConsumer(scorer, client, "in", "g", "c1", "out", batch=500)
    scored, score = [], consumer._score
    consumer._score = lambda entries: (scored.append(len(entries)), score(entries))[1]
    handled = consumer.run(stop=lambda: bool(scored))  # stopped while scoring the first
    assert handled == 1000  # the first batch, and the one read ahead while it was scored
    assert client.xpending("in", "g")["pending"] == 0
    assert client.xlen("out") == 1000
    assert StreamConsumer(scorer, client, "in", "g", "c2", "out").run(max_entries=2000) == 2000
    found = outputs_by_entry(client)
    assert len(found) == 3000 and all(len(v) == 1 for v in found.values())
