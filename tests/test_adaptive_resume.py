"""Adaptation does not depend on how records are grouped: one run, or the same stream
split at five points with restarts from the snapshot in between (a kill -9 just after a
snapshot among them), gives the same outputs line for line, on stdin and on Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from streammix.scoring.pipeline import json_line
from tests.test_adaptive_threats import sim

STREAMMIX = os.path.join(os.path.dirname(sys.executable), "streammix")
N, WINDOW = 12_000, 2000
SPLITS = [1000, 2345, 6100, 8000, 9001]  # around the shift (6,000), its alarm and relearning
BATCHES = [100, 256, 1000, 37, 500, 300]


@pytest.fixture(scope="module")
def stream():
    rng = np.random.default_rng(11)
    X = np.concatenate([sim.draw(rng, N // 2), sim.draw(rng, N // 2, 4.0)])
    bad = rng.random(N) < 0.01
    X[bad] += 9.0
    return [{"id": i, "x0": a, "x1": b, "x2": c} for i, (a, b, c) in enumerate(X.tolist())]


@pytest.fixture(scope="module")
def scorer():
    return sim.calibrated()


def test_five_restarts_give_the_outputs_of_one_run(tmp_path, scorer, stream):
    one = [json_line(o) for o in scorer.adapt(window=WINDOW).score_records(stream)]
    assert any('"event":"drift"' in line for line in one)
    split = []
    for start, end, batch in zip([0, *SPLITS], [*SPLITS, N], BATCHES, strict=True):
        scoring = scorer.adapt(window=WINDOW, snapshot=tmp_path / "s.npz")
        assert scoring.records == start
        split += [json_line(o) for o in scoring.score_records(stream[start:end],
                                                              batch_size=batch)]
    assert split == one
    resumed = scorer.adapt(window=WINDOW, snapshot=tmp_path / "s.npz")
    assert resumed.relearns == 1 and resumed.records == N


def _cli(model, *options):
    return [STREAMMIX, "score", str(model), "-", "--adapt", "--window", str(WINDOW), *options]


@pytest.mark.slow
def test_a_kill_9_just_after_a_snapshot_resumes_line_for_line(tmp_path, scorer, stream):
    scorer.save(tmp_path / "m.npz")
    text = "".join(json.dumps(r) + "\n" for r in stream)
    one = subprocess.run(_cli(tmp_path / "m.npz"), input=text, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    snapshot = tmp_path / "s.npz"
    # the outputs go to a file, so the scorer never waits on a pipe nobody reads
    with open(tmp_path / "head.jsonl", "w") as out:
        first = subprocess.Popen(_cli(tmp_path / "m.npz", "--snapshot", str(snapshot),
                                      "--snapshot-every", "3000", "--snapshot-seconds", "3600",
                                      "--micro-batch", "100"),
                                 stdin=subprocess.PIPE, stdout=out, text=True)
        first.stdin.write("".join(json.dumps(r) + "\n" for r in stream[:N // 2]))
        first.stdin.flush()  # kept open: the stream goes on
        deadline = time.monotonic() + 60
        while not snapshot.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        first.kill()  # SIGKILL: no clean stop, no last snapshot
        first.wait()
    head = (tmp_path / "head.jsonl").read_text().splitlines()
    done = scorer.adapt(window=WINDOW, snapshot=snapshot).records
    assert 3000 <= done <= N // 2
    kept, scored = [], 0
    for line in head:  # run 1's outputs up to the snapshot (its later ones are redone)
        if scored == done and '"event"' not in line:
            break
        kept.append(line)
        scored += '"score"' in line
    rest = "".join(json.dumps(r) + "\n" for r in stream[done:])
    second = subprocess.run(_cli(tmp_path / "m.npz", "--snapshot", str(snapshot)),
                            input=rest, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert f"resumed from {snapshot}: {done:,} records" in second.stderr
    assert kept + second.stdout.splitlines() == one.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is missing")
def test_redis_restarts_and_a_death_after_a_snapshot_give_the_outputs_of_one_run(
        tmp_path, scorer, stream):
    from streammix.scoring.redis import StreamConsumer
    from tests.test_serve_redis import RedisServer, outputs_by_entry

    server = RedisServer(tmp_path)
    try:
        client = server.client()
        pipe = client.pipeline(transaction=False)
        for record in stream:
            pipe.xadd("in", record)
        pipe.execute()
        one = StreamConsumer(scorer.adapt(window=WINDOW), client, "in", "g1", "c", "one",
                             batch=300)
        assert one.run(max_entries=N) == N
        snapshot = tmp_path / "s.npz"
        for start, batch in zip([0, *SPLITS], BATCHES, strict=False):
            scoring = scorer.adapt(window=WINDOW, snapshot=snapshot)
            consumer = StreamConsumer(scoring, client, "in", "g2", "c", "two", batch=batch,
                                      snapshot=snapshot, snapshot_every=1000)
            end = next((s for s in SPLITS if s > scoring.records), N)
            if start == 2345:  # dies just after a snapshot: no clean stop
                save = scoring.save_snapshot

                def save_and_die(path, save=save):
                    save(path)
                    raise SystemExit("killed")

                scoring.save_snapshot = save_and_die
                with pytest.raises(SystemExit):
                    consumer.run()
                continue
            consumer.run(max_entries=end - scoring.records)
        scoring = scorer.adapt(window=WINDOW, snapshot=snapshot)
        StreamConsumer(scoring, client, "in", "g2", "c", "two", snapshot=snapshot).run(
            max_entries=N - scoring.records)
        assert client.xpending("in", "g2")["pending"] == 0
        first, second = outputs_by_entry(client, "one"), outputs_by_entry(client, "two")
    finally:
        server.stop()
    assert len(first) == N and first == second
