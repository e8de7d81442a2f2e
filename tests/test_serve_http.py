"""The HTTP service on a real Uvicorn server on 127.0.0.1 (started and stopped here)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import streammix as sm

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.service  # a Uvicorn server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(app):
    """``app`` on a real Uvicorn server at a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    port = _free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                            log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


def calibrated(path):
    X = np.random.default_rng(0).normal(size=(2000, 2))
    scorer = sm.AnomalyScorer(sm.GaussianMixture(2, random_state=0).fit(X),
                              contamination=0.02).fit(X)
    scorer.save(path)
    return scorer


@pytest.fixture
def server(tmp_path):
    """A calibrated model file and a server serving it; yields (base URL, model path, scorer)."""
    from streammix.scoring.http import create_app

    path = tmp_path / "m.npz"
    scorer = calibrated(path)
    with serving(create_app(path, token="s3cret-token", max_body_bytes=10_000)) as base:
        yield base, path, scorer


def call(url, body=None, *, content_type="application/json", token="s3cret-token"):
    """(status, content type, body text) of a request."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None
                                     else "GET")
    request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers["content-type"], answer.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers["content-type"], answer.read().decode()


def test_score_an_object_an_array_and_ndjson_like_the_stdin_scorer(server):
    base, _, scorer = server
    one = {"id": 1, "x0": 0.1, "x1": -0.2}
    far = {"id": 2, "x0": 1e3, "x1": 1e3}
    bad = {"id": 3, "x0": "n/a", "x1": 0}
    status, _, text = call(f"{base}/score", json.dumps(one).encode())
    assert status == 200
    expected = next(iter(scorer.score_records([one])))
    assert json.loads(text) == expected
    status, _, text = call(f"{base}/score", json.dumps([one, far, bad]).encode())
    outputs = json.loads(text)
    assert status == 200 and [o["id"] for o in outputs] == [1, 2, 3]
    assert outputs[1]["anomaly"] is True and "error" in outputs[2]
    status, kind, text = call(f"{base}/score",
                              ("\n".join(json.dumps(r) for r in (one, far, bad)) + "\n").encode(),
                              content_type="application/x-ndjson")
    assert status == 200 and kind.startswith("application/x-ndjson")
    assert [json.loads(line) for line in text.splitlines()] == outputs


def test_records_no_output_can_carry_are_error_records_in_place(server):
    """The red team's poison records: one error output each, in place, never a 500."""
    base, _, _ = server
    good = b'{"id": 1, "x0": 0.1, "x1": 0.2}'
    poison = [b'{"id": "\\ud800", "x0": 0, "x1": 0}', b'{"id": 1' + b"0" * 400 + b', "x0": 0}']
    for bad in poison:
        for body, kind in ((b"[" + good + b"," + bad + b"," + good + b"]", "application/json"),
                           (good + b"\n" + bad + b"\n" + good + b"\n", "application/x-ndjson")):
            status, _, text = call(f"{base}/score", body, content_type=kind)
            assert status == 200, (bad, kind, text)
            outputs = json.loads(text) if kind == "application/json" else \
                [json.loads(line) for line in text.split("\n") if line]
            assert [o["id"] for o in outputs] == [1, None, 1] and "error" in outputs[1]
        status, _, text = call(f"{base}/score", bad)  # a poison object alone
        assert status == 200 and "error" in json.loads(text)
    # U+2028, U+2029 and U+0085 are legal raw in JSON strings: not line breaks of NDJSON
    lines = ['{"id": "a\u2028b", "x0": 0, "x1": 0}', '{"id": "c\u2029d\u0085", "x0": 0, "x1": 0}']
    status, _, text = call(f"{base}/score", "\n".join(lines).encode(),
                           content_type="application/x-ndjson")
    outputs = [json.loads(line) for line in text.split("\n") if line]  # NDJSON: \n only
    assert status == 200 and [o["id"] for o in outputs] == ["a\u2028b", "c\u2029d\u0085"]


def test_bad_requests_get_4xx_with_a_json_error_and_never_a_500(server):
    base, _, _ = server
    cases = [(b"{not json", 400), (b"42", 400), (b"\xff\xfe", 400),
             (b"[" * 5000 + b"]" * 5000, 400), (b"x" * 20_000, 413)]
    for body, expected in cases:
        status, _, text = call(f"{base}/score", body)
        assert status == expected, (body[:20], status, text)
        assert "error" in json.loads(text)
    assert call(f"{base}/score", b"{}", token=None)[0] == 401
    assert call(f"{base}/score", b"{}", token="wrong")[0] == 401
    for path in ("/nowhere", "/a", "/b"):
        assert call(f"{base}{path}")[0] == 404
    metrics = call(f"{base}/metrics")[2]
    assert 'path="other",status="404"} 3.0' in metrics  # not one label per path
    assert "nowhere" not in metrics
    assert call(f"{base}/healthz", token=None)[0] == 200  # health needs no token


def test_model_metrics_and_an_atomic_reload(server):
    base, path, _scorer = server
    status, _, text = call(f"{base}/model")
    assert status == 200 and json.loads(text)["model"] == "GaussianMixture"
    call(f"{base}/score", json.dumps([{"id": i, "x0": 0, "x1": 0} for i in range(5)]).encode())
    status, _, metrics = call(f"{base}/metrics")
    assert status == 200 and "streammix_records_total 5.0" in metrics
    assert "streammix_request_seconds_bucket" in metrics
    # a new model file, written atomically: the next requests use it
    X = np.random.default_rng(1).normal(5.0, 1.0, size=(2000, 2))
    moved = sm.AnomalyScorer(sm.GaussianMixture(2, random_state=0).fit(X),
                             contamination=0.02).fit(X)
    moved.save(path)
    time.sleep(1.1)  # the file is checked at most once a second
    status, _, text = call(f"{base}/score", json.dumps({"id": 9, "x0": 5, "x1": 5}).encode())
    assert json.loads(text) == next(iter(moved.score_records([{"id": 9, "x0": 5, "x1": 5}])))
    assert json.loads(call(f"{base}/healthz")[2])["model_version"] == 2
    path.write_bytes(b"half a file")  # a broken file: the running model stays
    time.sleep(1.1)
    assert call(f"{base}/score", json.dumps({"id": 9, "x0": 5, "x1": 5}).encode())[0] == 200
    assert json.loads(call(f"{base}/healthz")[2])["reload_error"]


def test_outputs_without_explanations_and_the_anomaly_rate_metric(tmp_path):
    from streammix.scoring.http import create_app

    scorer = calibrated(tmp_path / "m.npz")
    records = [{"id": 1, "x0": 0.0, "x1": 0.0}, {"id": 2, "x0": 40.0, "x1": 40.0}]
    short = list(scorer.score_records(records, explain=False))
    full = list(scorer.score_records(records))
    assert [set(o) for o in short] == [{"id", "score", "anomaly"}] * 2
    assert [o["score"] for o in short] == [o["score"] for o in full]
    with serving(create_app(tmp_path / "m.npz", explain=False)) as base:
        status, _, text = call(f"{base}/score", json.dumps(records).encode(), token=None)
        assert status == 200 and json.loads(text) == short
        assert "streammix_anomaly_rate 0.5" in call(f"{base}/metrics", token=None)[2]


def _other_threshold(path, scorer, threshold, same_size=True):
    """The model file again with another threshold (of the same length: the same size),
    its timestamp kept."""
    from streammix.scoring.scorer import AnomalyScorer

    other = AnomalyScorer(scorer.model, threshold=threshold)
    size, stamp = path.stat().st_size, path.stat().st_mtime_ns
    replacement = path.with_name("next.npz")
    other.save(replacement)
    assert replacement.stat().st_size == size or not same_size
    os.replace(replacement, path)
    os.utime(path, ns=(stamp, stamp))  # as `cp -p` or `rsync -t` leave it


def test_reload_by_content_in_the_background_and_never_from_a_special_file(tmp_path):
    from streammix.scoring.http import create_app

    path = tmp_path / "m.npz"
    scorer = calibrated(path)
    far = {"id": 1, "x0": 3.5, "x1": 3.5}
    low = next(iter(scorer.score_records([far])))["score"]
    assert low < -5.0
    first = f"{-abs(low) - 1:.3f}"  # far is normal under this threshold...
    second = f"{-abs(low) + 1:.3f}"  # ...and anomalous under this one, of the same length
    assert len(first) == len(second)
    _other_threshold(path, scorer, float(first), same_size=False)
    with serving(create_app(path, reload_seconds=0.2)) as base:
        assert json.loads(call(f"{base}/score", json.dumps(far).encode())[2])["anomaly"] is False
        _other_threshold(path, scorer, float(second))
        time.sleep(1.0)  # no request meanwhile: /healthz is current by itself
        assert json.loads(call(f"{base}/healthz", token=None)[2])["model_version"] == 2
        assert json.loads(call(f"{base}/score", json.dumps(far).encode())[2])["anomaly"] is True
        path.unlink()
        os.mkfifo(path)  # reading a FIFO would block: it is never opened
        time.sleep(0.6)
        began = time.monotonic()
        assert call(f"{base}/score", json.dumps(far).encode())[0] == 200
        assert time.monotonic() - began < 2.0
        health = json.loads(call(f"{base}/healthz", token=None)[2])
        assert health["model_version"] == 2 and "not a regular file" in health["reload_error"]


def test_records_in_flight_are_capped_with_429(tmp_path):
    from streammix.scoring.http import create_app

    calibrated(tmp_path / "m.npz")
    app = create_app(tmp_path / "m.npz", max_records_in_flight=500)
    served, entered, release = app.state.served, threading.Event(), threading.Event()
    real = served.scoring

    class Held:  # the first request holds its records until released
        model = real.model

        def score_batch(self, records, **options):
            entered.set()
            release.wait(20)
            return real.score_batch(records, **options)

    served.scoring = Held()
    body = json.dumps([{"id": i, "x0": 0.0, "x1": 0.0} for i in range(100)]).encode()
    with serving(app) as base:
        first = {}
        worker = threading.Thread(target=lambda: first.update(answer=call(
            f"{base}/score", body, token=None)))
        worker.start()
        assert entered.wait(20)
        status, _, text = call(f"{base}/score", body, token=None)
        assert status == 429 and "in flight" in json.loads(text)["error"]
        release.set()
        worker.join(20)
        assert first["answer"][0] == 200 and len(json.loads(first["answer"][2])) == 100
        assert call(f"{base}/score", body, token=None)[0] == 200  # released: admitted again


def test_tiny_records_are_counted_before_decoding(tmp_path):
    """A body of bare numbers holds a record every 2 bytes: the reservation before decoding
    must count them so (it counted one per 8 bytes: 4x more memory than the cap)."""
    from streammix.scoring.http import create_app

    calibrated(tmp_path / "m.npz")
    app = create_app(tmp_path / "m.npz", max_records_in_flight=1000)
    served, entered, release = app.state.served, threading.Event(), threading.Event()
    real = served.scoring

    class Held:
        model = real.model

        def score_batch(self, records, **options):
            entered.set()
            release.wait(20)
            return real.score_batch(records, **options)

    served.scoring = Held()
    zeros = ("[" + ",".join(["0"] * 600) + "]").encode()  # 600 records in 1,201 bytes
    with serving(app) as base:
        first = {}
        worker = threading.Thread(target=lambda: first.update(answer=call(
            f"{base}/score", zeros, token=None)))
        worker.start()
        assert entered.wait(20)  # 600 records held
        status, _, _ = call(f"{base}/score", zeros, token=None)
        assert status == 429  # 600 more would pass the cap of 1,000
        release.set()
        worker.join(20)
        assert first["answer"][0] == 200 and len(json.loads(first["answer"][2])) == 600


def test_a_client_that_goes_away_mid_body_is_dropped_quietly(tmp_path, caplog):
    from streammix.scoring.http import create_app

    calibrated(tmp_path / "m.npz")
    with serving(create_app(tmp_path / "m.npz")) as base:
        port = int(base.rsplit(":", 1)[1])
        with caplog.at_level("DEBUG"):
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port)) as client:
                    client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                   b"application/json\r\nContent-Length: 5000\r\n\r\n[{\"x0\"")
                time.sleep(0.2)
            assert call(f"{base}/healthz", token=None)[0] == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], \
        [r.getMessage() for r in caplog.records]


def _metric(text: str, sample: str) -> float:
    """The value of one sample line (``name`` or ``name{labels}``) of Prometheus text."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.rsplit(" ", 1)[0] == sample]
    assert len(values) == 1, (sample, text)
    return values[0]


def test_the_anomaly_rate_is_over_the_last_records_scored_and_skips_error_records(tmp_path):
    from streammix.scoring.http import create_app

    scorer = calibrated(tmp_path / "m.npz")
    quiet = [{"id": i, "x0": 0.01 * (i % 7), "x1": -0.01 * (i % 5)} for i in range(1000)]
    loud = [{"id": 2000 + i, "x0": 1e3 + i, "x1": -1e3} for i in range(30)]
    broken = [{"id": 3000 + i, "x0": "n/a", "x1": 0} for i in range(20)]
    # the verdicts, known without the server: near the mean of N(0, I) is normal, 1e3 away not
    assert not any(o["anomaly"] for o in scorer.score_records(quiet))
    assert all(o["anomaly"] for o in scorer.score_records(loud))
    with serving(create_app(tmp_path / "m.npz", explain=False)) as base:
        for start in range(0, 1000, 250):  # several requests: the window spans them
            assert call(f"{base}/score", json.dumps(quiet[start:start + 250]).encode(),
                        token=None)[0] == 200
        mixed = [record for pair in zip(loud, broken + [None] * 10, strict=True)
                 for record in pair if record is not None]
        assert call(f"{base}/score", json.dumps(mixed).encode(), token=None)[0] == 200
        metrics = call(f"{base}/metrics", token=None)[2]
        # the last 1,000 scored: 970 quiet and 30 loud; the 20 error records are not among them
        # (cumulative would be 30 / 1,030; with errors in the denominator, 30 / 1,050)
        assert _metric(metrics, "streammix_anomaly_rate") == pytest.approx(30 / 1000)
        assert _metric(metrics, "streammix_scored_records_total") == 1030
        assert _metric(metrics, "streammix_records_total") == 1050
        assert _metric(metrics, "streammix_record_errors_total") == 20
        assert _metric(metrics, "streammix_anomalies_total") == 30
        # 1,000 quiet records more push the loud ones out of the window
        assert call(f"{base}/score", json.dumps(quiet).encode(), token=None)[0] == 200
        metrics = call(f"{base}/metrics", token=None)[2]
        assert _metric(metrics, "streammix_anomaly_rate") == 0.0
        assert _metric(metrics, "streammix_scored_records_total") == 2030
    # another window: the last 40 scored are 10 quiet and the 30 loud
    with serving(create_app(tmp_path / "m.npz", anomaly_rate_window=40)) as base:
        call(f"{base}/score", json.dumps(quiet[:100] + broken + loud).encode(), token=None)
        metrics = call(f"{base}/metrics", token=None)[2]
        assert _metric(metrics, "streammix_anomaly_rate") == pytest.approx(30 / 40)
    with pytest.raises(ValueError, match="at least 1"):
        create_app(tmp_path / "m.npz", anomaly_rate_window=0)


def test_a_method_not_allowed_on_a_served_path_keeps_its_label_and_says_what_is(server):
    base, _, _ = server
    answers = {}
    for method, path in (("GET", "/score"), ("PUT", "/score"), ("POST", "/healthz")):
        request = urllib.request.Request(f"{base}{path}", data=b"{}" if method != "GET"
                                         else None, method=method)
        request.add_header("Authorization", "Bearer s3cret-token")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        answers[method, path] = caught.value
        assert caught.value.code == 405 and "error" in json.loads(caught.value.read())
    assert answers["GET", "/score"].headers["Allow"] == "POST"
    assert set(answers["POST", "/healthz"].headers["Allow"].split(", ")) == {"GET", "HEAD"}
    metrics = call(f"{base}/metrics")[2]
    assert _metric(metrics, 'streammix_requests_total{path="/score",status="405"}') == 2
    assert _metric(metrics, 'streammix_requests_total{path="/healthz",status="405"}') == 1
    assert 'path="other"' not in metrics


def test_serve_takes_the_anomaly_rate_window_for_http_only(tmp_path, monkeypatch):
    import uvicorn
    from click.testing import CliRunner

    from streammix.cli import main

    calibrated(tmp_path / "m.npz")
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "m.npz"), "--http",
                                       "127.0.0.1:9", "--anomaly-rate-window", "4"])
    assert result.exit_code == 0, result.output
    quiet = [{"id": i, "x0": 0.0, "x1": 0.0} for i in range(10)]
    loud = [{"id": 10 + i, "x0": 1e3, "x1": 1e3} for i in range(2)]
    with serving(apps[0]) as base:
        call(f"{base}/score", json.dumps(quiet + loud).encode(), token=None)
        metrics = call(f"{base}/metrics", token=None)[2]
    assert _metric(metrics, "streammix_anomaly_rate") == 0.5  # 2 of the last 4, not of 12
    refused = CliRunner().invoke(main, ["serve", str(tmp_path / "m.npz"), "--redis",
                                        "redis://127.0.0.1:9/0", "--stream", "in", "--output",
                                        "out", "--anomaly-rate-window", "4"])
    assert refused.exit_code == 2 and "--anomaly-rate-window" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
