"""`streammix score` and `calibrate` as a user runs them: real processes and pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammix as sm
from tests.conftest import make_blobs

STREAMMIX = os.path.join(os.path.dirname(sys.executable), "streammix")
X = make_blobs(2000, seed=9)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.npz"
    table = pa.table({"id": np.arange(len(X)), **{f"x{j}": X[:, j] for j in range(3)}})
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=300)
    done = subprocess.run([STREAMMIX, "fit", tmp_path / "train.parquet", "-k", "3", "--seed",
                           "0", "--columns", "x0,x1,x2", "--contamination", "0.02", "-o", path],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return path


def test_fit_with_contamination_stores_the_calibrated_threshold(model_file):
    scorer = sm.AnomalyScorer(sm.load(model_file))
    np.testing.assert_allclose(scorer.fraction_below(X), 0.02, atol=1 / len(X))
    info = subprocess.run([STREAMMIX, "info", model_file], capture_output=True, text=True)
    assert "anomaly threshold" in info.stdout and "2.00%" in info.stdout


def test_stdin_json_lines_and_csv(model_file):
    lines = [json.dumps({"id": i, "x0": float(x[0]), "x1": float(x[1]), "x2": float(x[2])})
             for i, x in enumerate(X[:20])]
    lines[5] = "{broken"
    lines[9] = json.dumps({"id": 9, "x0": 1.0, "x1": "NaN", "x2": 0})
    lines.append(json.dumps({"id": "far", "x0": 90.0, "x1": 0.0, "x2": 0.0}))
    done = subprocess.run([STREAMMIX, "score", model_file, "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(out) == 21 and [o["id"] for o in out][-1] == "far"
    assert "error" in out[5] and out[9]["id"] == 9 and "error" in out[9]
    assert out[-1]["anomaly"] is True and out[-1]["top_features"][0] == "x0"
    assert "21 records" in done.stderr and "2 errors" in done.stderr
    csv_text = "id,x0,x1,x2\n" + "\n".join(f"r{i},{x[0]},{x[1]},{x[2]}"
                                            for i, x in enumerate(X[:5])) + "\n"
    done = subprocess.run([STREAMMIX, "score", model_file, "-"], input=csv_text,
                          capture_output=True, text=True)
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["id"] for o in out] == [f"r{i}" for i in range(5)]
    expected = sm.load(model_file).score_samples(X[:5])
    np.testing.assert_allclose([o["score"] for o in out], expected, rtol=1e-12)


def test_closed_stdout_ends_cleanly(model_file):
    line = json.dumps({"id": 1, "x0": 0.0, "x1": 0.0, "x2": 0.0}) + "\n"
    producer = subprocess.Popen([STREAMMIX, "score", model_file, "-", "--micro-batch", "10"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def feed():
        try:
            producer.stdin.write(line.encode() * 20000)
            producer.stdin.close()
        except BrokenPipeError:  # the scorer has gone, as it should
            pass

    writer = threading.Thread(target=feed)
    writer.start()
    assert producer.stdout.readline()
    producer.stdout.close()  # like `| head -1`
    writer.join(timeout=60)
    assert producer.wait(timeout=60) == 0
    assert b"Traceback" not in producer.stderr.read()


def test_batch_scores_to_parquet_with_ids(tmp_path, model_file):
    done = subprocess.run([STREAMMIX, "score", model_file, tmp_path / "train.parquet", "-o",
                           tmp_path / "scores.parquet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "scores.parquet")
    assert table.column_names == ["id", "score", "anomaly", "cluster"]
    np.testing.assert_array_equal(table.column("id").to_numpy(), np.arange(len(X)))
    model = sm.load(model_file)
    np.testing.assert_allclose(table.column("score").to_numpy(), model.score_samples(X))
    # the scorer runs model.predict's per-row code on its chunks: the same labels
    np.testing.assert_array_equal(table.column("cluster").to_numpy(), model.predict(X))
    assert table.column("anomaly").to_numpy().sum() == 40  # 2 % of the training rows


@pytest.mark.slow
def test_watch_scores_new_files_once_across_restarts(tmp_path, model_file):
    incoming, scored = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()

    def land(name, rows):  # an atomic producer: hidden name, then rename
        table = pa.table({"id": np.arange(len(rows)), **{f"x{j}": rows[:, j] for j in range(3)}})
        pq.write_table(table, incoming / f".{name}.tmp")
        os.rename(incoming / f".{name}.tmp", incoming / name)

    land("a.parquet", X[:100])
    land("b.parquet", X[100:300])
    run = [STREAMMIX, "score", model_file, "--watch", incoming, "-o", scored, "--once"]
    first = subprocess.run(run, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(scored)) == [".streammix-watch.json", "a.scores.parquet",
                                          "b.scores.parquet"]
    before = os.stat(scored / "a.scores.parquet").st_mtime_ns
    land("c.parquet", X[300:350])
    second = subprocess.run(run, capture_output=True, text=True)  # a restart
    assert "c.parquet" in second.stderr and "a.parquet" not in second.stderr
    assert os.stat(scored / "a.scores.parquet").st_mtime_ns == before  # not repeated
    assert pq.read_table(scored / "c.scores.parquet").num_rows == 50


def test_stream_without_threshold_is_a_clear_error(tmp_path):
    sm.GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "plain.npz")
    done = subprocess.run([STREAMMIX, "score", tmp_path / "plain.npz", "-"], input="",
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no threshold" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_bad_record_gets_its_own_error_and_the_stream_goes_on(model_file):
    good = [json.dumps({"id": i, "x0": float(x[0]), "x1": float(x[1]), "x2": float(x[2])})
            for i, x in enumerate(X[:3])]
    bad = [
        b"\x00\xff\xfe binary junk",                                 # a junk first line
        json.dumps({"id": "big", "x0": int("9" * 400), "x1": 0, "x2": 0}).encode(),
        b'{"id": "huge", "x0": ' + b"9" * 5000 + b', "x1": 0, "x2": 0}',
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"id": "long", "x0": "7" * 2_000_000, "x1": 0, "x2": 0}).encode(),
        b'{"id": "nan", "x0": NaN, "x1": 0, "x2": 0}',
        json.dumps({"id": [1, 2], "x0": 0, "x1": 0, "x2": 0}).encode(),
        b'\xc3\x28{"x0": 1}',                                          # invalid UTF-8
        b'{"id": 1' + b"0" * 400 + b', "x0": 0, "x1": 0, "x2": 0}',  # an id beyond 64 bits
        b'{"id": "\\ud800", "x0": 0, "x1": 0, "x2": 0}',             # a lone surrogate
    ]
    far = json.dumps({"id": "far", "x0": 1e300, "x1": -1e300, "x2": 0}).encode()
    lines = []
    for junk in bad:
        lines += [junk, *(g.encode() for g in good)]
    lines.append(far)
    done = subprocess.run([STREAMMIX, "score", model_file, "-"], input=b"\n".join(lines) + b"\n",
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    out = [json.loads(line, parse_constant=pytest.fail) for line in done.stdout.splitlines()]
    assert len(out) == len(lines)  # one output per record, in order, none lost
    for i, junk in enumerate(bad):
        assert "error" in out[4 * i], (junk[:40], out[4 * i])
        assert [o["id"] for o in out[4 * i + 1 : 4 * i + 4]] == [0, 1, 2]
        assert not any("error" in o for o in out[4 * i + 1 : 4 * i + 4])
    assert out[-1]["id"] == "far" and out[-1]["anomaly"] is True
    assert "more than" not in done.stderr.decode()


def test_csv_with_an_overlong_field_loses_no_neighbour(model_file):
    rows = [f"r{i},{x[0]},{x[1]},{x[2]}" for i, x in enumerate(X[:3])]
    text = "\n".join(["id,x0,x1,x2", rows[0], "r9," + "1" * 200_000 + ",0,0", *rows[1:]]) + "\n"
    done = subprocess.run([STREAMMIX, "score", model_file, "-"], input=text,
                          capture_output=True, text=True, timeout=120)
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(out) == 4 and "error" in out[1]
    assert [o["id"] for o in (out[0], out[2], out[3])] == ["r0", "r1", "r2"]


@pytest.mark.slow
def test_watch_reads_only_regular_files_inside_and_goes_past_a_bad_one(tmp_path, model_file):
    incoming, scored, secret = tmp_path / "in", tmp_path / "out", tmp_path / "secret"
    incoming.mkdir()
    secret.mkdir()

    def table(rows, first_id=0):
        return pa.table({"id": np.arange(first_id, first_id + len(rows)),
                         **{f"x{j}": rows[:, j] for j in range(3)}})

    pq.write_table(table(X[:10], first_id=7000), secret / "private.parquet")
    pq.write_table(table(X[:40]), incoming / "a.parquet")
    (incoming / "b.parquet").write_bytes(b"PAR1 this is not parquet PAR1")  # damaged
    pq.write_table(table(X[40:70]), incoming / "c.parquet")  # sorts after the bad one
    os.symlink(secret / "private.parquet", incoming / "link.parquet")
    os.symlink(secret, incoming / "dir.parquet")
    os.mkfifo(incoming / "fifo.parquet")
    run = [STREAMMIX, "score", model_file, "--watch", incoming, "-o", scored, "--once"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in first.stderr
    assert sorted(p.name for p in scored.glob("*.parquet")) == ["a.scores.parquet",
                                                                "c.scores.parquet"]
    for name in ("b.parquet", "link.parquet", "dir.parquet", "fifo.parquet"):
        assert f"{name}: not scored" in first.stderr
    progress = json.loads((scored / ".streammix-watch.json").read_text())
    assert progress["done"] == ["a.parquet", "c.parquet"]
    assert "b.parquet" in progress["failed"]  # quarantined with its error
    again = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "b.parquet" not in again.stderr  # not retried unchanged
    pq.write_table(table(X[70:90]), incoming / "b.parquet")  # mended: scored now
    mended = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert "b.parquet: 20 rows" in mended.stderr
    (scored / ".streammix-watch.json").write_text('{"done": 3}')
    broken = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert ".streammix-watch.json" in broken.stderr and "damaged" in broken.stderr
