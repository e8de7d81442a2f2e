"""No option is silently ignored: ``score`` and ``serve`` over the cross product of
--adapt x --drift/--no-drift x --snapshot x --threshold.

Each combination either does what the docs say (checked on its outputs) or is refused
with one line and exit code 2 before any work. The expected outcome of each is written
here from the documented rules, not read from the code.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from streammix.cli import main
from tests.test_adaptive import draw, stream_with_shift

STREAMMIX = os.path.join(os.path.dirname(sys.executable), "streammix")
N = 4000
COMBINATIONS = list(itertools.product((False, True), (None, True, False), (False, True),
                                      (False, True)))


def _name(combination) -> str:
    return "-".join(_flags(combination, "S", "T")) or "none"


def _flags(combination, snapshot, threshold) -> list[str]:
    adapt, drift, with_snapshot, with_threshold = combination
    return ([*(["--adapt"] if adapt else []),
             *({True: ["--drift"], False: ["--no-drift"]}.get(drift, [])),
             *(["--snapshot", str(snapshot)] if with_snapshot else []),
             *(["--threshold", str(threshold)] if with_threshold else [])])


def _refusal(transport, combination) -> str | None:
    """What the docs say is refused, and a word the one-line error must hold."""
    adapt, drift, snapshot, threshold = combination
    if transport in ("http", "data") and (adapt or drift is not None or snapshot):
        if not (transport == "http" and not adapt and drift is False and not snapshot):
            return "--redis" if transport == "http" else "stream on stdin"
    if snapshot and not adapt:
        return "--adapt"
    if adapt and threshold:
        return "--threshold"
    return None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import streammix as sm

    folder = tmp_path_factory.mktemp("options")
    train = draw(np.random.default_rng(99), 6000)
    scorer = sm.AnomalyScorer(sm.GaussianMixture(3, random_state=0).fit(train),
                              contamination=0.02).fit(train)
    scorer.save(folder / "m.npz")
    X, _, _ = stream_with_shift(n=N)
    # a threshold of our own, far from the calibrated one, to see that it is the one used
    return folder / "m.npz", scorer.offset_ + 3.0, X


def _records(X):
    return [{"id": i, "x0": a, "x1": b, "x2": c} for i, (a, b, c) in enumerate(X.tolist())]


def _check_outputs(outputs, combination, threshold, snapshot_file):
    """The combination did what the docs say: the adaptive threshold on each output with
    --adapt, drift events when the drift test is on (default: with --adapt), the snapshot
    written when asked for, the given threshold the one that flags."""
    adapt, drift, snapshot, with_threshold = combination
    scored = [o for o in outputs if "score" in o]
    assert len(scored) == N
    assert all(("threshold" in o) == adapt for o in scored)
    drift_on = adapt if drift is None else drift
    assert any(o.get("event") == "drift" for o in outputs) == drift_on
    assert snapshot_file.exists() == snapshot
    if with_threshold:
        assert all(o["anomaly"] == (o["score"] < threshold) for o in scored)


def _one_line_refusal(result, word):
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert word in result.output, result.output


@pytest.mark.slow
@pytest.mark.parametrize("source", ["stdin", "record file"])
@pytest.mark.parametrize("combination", COMBINATIONS, ids=_name)
def test_score_on_a_stream(tmp_path, model, combination, source):
    """stdin, and a record file (a stream that is not stdin): the same rules."""
    path, threshold, X = model
    text = "".join(json.dumps(r) + "\n" for r in _records(X))
    flags = _flags(combination, tmp_path / "s.npz", threshold)
    if source == "stdin":
        result = CliRunner().invoke(main, ["score", str(path), "-", *flags], input=text)
    else:
        (tmp_path / "events.jsonl").write_text(text)
        result = CliRunner().invoke(main, ["score", str(path), str(tmp_path / "events.jsonl"),
                                           *flags])
    refusal = _refusal("stdin", combination)
    if refusal:
        _one_line_refusal(result, refusal)
        assert not (tmp_path / "s.npz").exists()
        return
    assert result.exit_code == 0, result.output
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    _check_outputs(outputs, combination, threshold, tmp_path / "s.npz")


@pytest.mark.parametrize("combination", COMBINATIONS, ids=_name)
def test_score_on_data(tmp_path, model, combination):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, threshold, X = model
    pq.write_table(pa.table({f"x{j}": X[:300, j] for j in range(3)}), tmp_path / "d.parquet")
    result = CliRunner().invoke(main, ["score", str(path), str(tmp_path / "d.parquet"), "-o",
                                       str(tmp_path / "out.parquet"),
                                       *_flags(combination, tmp_path / "s.npz", threshold)])
    refusal = _refusal("data", combination)
    if refusal:
        _one_line_refusal(result, refusal)
        assert not (tmp_path / "out.parquet").exists()
        return
    assert result.exit_code == 0, result.output
    out = pq.read_table(tmp_path / "out.parquet").to_pydict()
    limit = threshold if combination[3] else None
    if limit is not None:
        assert out["anomaly"] == [s < limit for s in out["score"]]


@pytest.mark.parametrize("combination", COMBINATIONS, ids=_name)
def test_serve_refuses_before_any_work(tmp_path, model, combination, monkeypatch):
    """Refused combinations stop before listening or connecting (the Redis URL is a closed
    port, and uvicorn.run would fail the test); accepted ones reach that point."""
    import uvicorn

    path, threshold, _ = model
    reached = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: reached.append(app))
    monkeypatch.setattr("streammix.cli.serving.consume",
                        lambda scoring, *a, **kw: reached.append(scoring))
    flags = _flags(combination, tmp_path / "s.npz", threshold)
    for transport, extra in (("http", ["--http", "127.0.0.1:9"]),
                             ("redis", ["--redis", "redis://127.0.0.1:9/0", "--stream", "in",
                                        "--output", "out"])):
        reached.clear()
        result = CliRunner().invoke(main, ["serve", str(path), *extra, *flags])
        refusal = _refusal(transport, combination)
        if refusal:
            _one_line_refusal(result, refusal)
            assert reached == []
        else:
            assert result.exit_code == 0, result.output
            assert len(reached) == 1


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is missing")
@pytest.mark.parametrize("combination", [c for c in COMBINATIONS if not _refusal("redis", c)],
                         ids=_name)
def test_serve_redis(tmp_path, model, combination):
    from tests.test_serve_redis import RedisServer, outputs_by_entry

    path, threshold, X = model
    server = RedisServer(tmp_path)
    consumer = None
    try:
        client = server.client()
        pipe = client.pipeline(transaction=False)
        for record in _records(X):
            pipe.xadd("in", record)
        pipe.execute()
        consumer = subprocess.Popen(
            [STREAMMIX, "serve", str(path), "--redis", server.url, "--stream", "in",
             "--output", "out", *_flags(combination, tmp_path / "s.npz", threshold)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and consumer.poll() is None:
            info = client.xinfo_groups("in") if client.exists("in") else []
            if info and info[0]["pending"] == 0 and info[0]["entries-read"] == N:
                break
            time.sleep(0.1)
        consumer.send_signal(signal.SIGTERM)
        _, stderr = consumer.communicate(timeout=60)
        assert consumer.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), stderr
        assert "Traceback" not in stderr
        outputs = [o for written in outputs_by_entry(client).values() for o in written]
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
        server.stop()
    parsed = []
    for o in outputs:
        if "event" in o:
            parsed.append({"event": o["event"]})
            continue
        parsed.append({"score": float(o["score"]), "anomaly": o["anomaly"] == "true",
                       **({"threshold": float(o["threshold"])} if "threshold" in o else {})})
    _check_outputs(parsed, combination, threshold, tmp_path / "s.npz")


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".csv"])
def test_record_file_scores_as_stdin(tmp_path, model, suffix):
    """``score MODEL events.jsonl`` (or .ndjson, .csv) writes to stdout the lines that the
    same records on stdin give, with no -o."""
    path, _, X = model
    records = _records(X[:300])
    if suffix == ".csv":
        text = "id,x0,x1,x2\n" + "".join(
            f"{r['id']},{r['x0']!r},{r['x1']!r},{r['x2']!r}\n" for r in records)
    else:
        text = "".join(json.dumps(r) + "\n" for r in records)
    events = tmp_path / f"events{suffix}"
    events.write_text(text)
    from_file = CliRunner().invoke(main, ["score", str(path), str(events)])
    from_stdin = CliRunner().invoke(main, ["score", str(path), "-"], input=text)
    assert from_file.exit_code == 0, from_file.output
    lines = from_file.stdout.splitlines()
    assert len(lines) == len(records)
    # CSV carries ids as text
    assert [str(json.loads(line)["id"]) for line in lines] == [str(r["id"]) for r in records]
    assert lines == from_stdin.stdout.splitlines()


@pytest.mark.parametrize("flags, word", [
    (["-o", "OUT"], "--output"),
    (["--format", "csv"], "--format"),
    (["--contamination", "0.01"], "calibrate"),
    (["--once"], "--watch"),
])
def test_record_file_refusals(tmp_path, model, flags, word):
    """Options that would do nothing for a record file are refused in one line."""
    path, _, X = model
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(r) + "\n" for r in _records(X[:10])))
    flags = [str(tmp_path / "o.parquet") if f == "OUT" else f for f in flags]
    result = CliRunner().invoke(main, ["score", str(path), str(events), *flags])
    _one_line_refusal(result, word)
    assert result.stdout.strip().count("\n") == 0


def test_missing_record_file(tmp_path, model):
    result = CliRunner().invoke(main, ["score", str(model[0]), str(tmp_path / "no.ndjson")])
    _one_line_refusal(result, "no such record file")


def test_serve_start_up_line_names_the_model_digest(model, monkeypatch):
    """The start-up line carries the first 12 hex digits of the model file's SHA-256."""
    import hashlib

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    path = model[0]
    result = CliRunner().invoke(main, ["serve", str(path), "--http", "127.0.0.1:9"])
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert f"(sha256 {digest})" in result.stderr


@pytest.mark.parametrize("transport, missing", [("http", "starlette"), ("http", "uvicorn"),
                                                ("http", "prometheus_client"),
                                                ("redis", "redis")])
def test_serve_without_the_serving_extra_says_how_to_install_it(model, monkeypatch, transport,
                                                                missing):
    """A missing module of the extra (None in sys.modules: its import fails) is one line
    with the install command that works from a clone (README, Installing)."""
    path, _, _ = model
    monkeypatch.setitem(sys.modules, missing, None)
    extra = (["--http", "127.0.0.1:9"] if transport == "http" else
             ["--redis", "redis://127.0.0.1:9/0", "--stream", "in", "--output", "out"])
    result = CliRunner().invoke(main, ["serve", str(path), *extra])
    _one_line_refusal(result, "pip install -e '.[serve]'")
    assert f"({missing} is not installed)" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
