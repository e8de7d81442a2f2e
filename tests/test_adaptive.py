"""Adaptive stream scoring on simulated drifts: recovery, anomalies caught, poisoning."""

from __future__ import annotations

import numpy as np
import pytest

import streammix as sm
from streammix.scoring.adaptive import PageHinkley

CENTRES = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
WINDOW = 2000


def draw(rng, n, shift=0.0):
    """Rows of the 3-component mixture, every mean moved by ``shift`` (in sd) along (1,1,1)."""
    labels = rng.integers(0, 3, n)
    return CENTRES[labels] + shift / np.sqrt(3) + rng.normal(size=(n, 3))


def far_from(rng, centres, n, distance=9.0):
    """Injected anomalies: ``distance`` sd from a random component, in a random direction."""
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return centres[rng.integers(0, 3, n)] + distance * direction


def stream_with_shift(seed=0, n=24_000, shift=6.0, rate=0.01):
    """A stream whose components move by ``shift`` sd half-way, 1 % injected anomalies."""
    rng = np.random.default_rng(seed)
    half = n // 2
    X = np.concatenate([draw(rng, half), draw(rng, n - half, shift)])
    injected = rng.random(n) < rate
    moved = CENTRES + shift / np.sqrt(3)
    X[injected & (np.arange(n) < half)] = far_from(rng, CENTRES, (injected[:half]).sum())
    X[injected & (np.arange(n) >= half)] = far_from(rng, moved, (injected[half:]).sum())
    return X, injected, half


def records(X):
    return ({"id": i, "x0": a, "x1": b, "x2": c} for i, (a, b, c) in enumerate(X.tolist()))


@pytest.fixture(scope="module")
def scorer():
    train = draw(np.random.default_rng(99), 6000)
    model = sm.GaussianMixture(3, random_state=0).fit(train)
    return sm.AnomalyScorer(model, contamination=0.02).fit(train)


def flagged(outputs):
    scored = [o for o in outputs if "score" in o]
    return np.array([o["anomaly"] for o in scored])


def test_the_adaptive_scorer_recovers_from_a_shift_and_keeps_catching_anomalies(scorer):
    X, injected, half = stream_with_shift()
    static = flagged(scorer.score_records(records(X)))
    adaptive_outputs = list(scorer.adapt(window=WINDOW, forgetting_factor=0.999)
                            .score_records(records(X)))
    adaptive = flagged(adaptive_outputs)
    assert len(static) == len(adaptive) == len(X)  # one output per record, in order
    # each record carries the threshold it was judged by
    assert all(o["anomaly"] == (not o["score"] >= o["threshold"])
               for o in adaptive_outputs if "score" in o)
    assert static[half:].mean() > 0.9  # the fixed model flags most records after the shift
    # recovered within 2 windows: the flag rate is back within 2x the calibrated 2 %
    after = slice(half + 2 * WINDOW, len(X))
    assert adaptive[after].mean() < 2 * 0.02
    assert adaptive[:half][~injected[:half]].mean() < 2 * 0.02  # no harm before the shift
    caught_during_and_after = adaptive[half:][injected[half:]].mean()
    assert caught_during_and_after >= 0.9
    assert adaptive[:half][injected[:half]].mean() >= 0.9
    # the drift alarm fired, soon after the shift, and carries the record where it did
    events = [o for o in adaptive_outputs if o.get("event") == "drift"]
    assert events and half <= events[0]["record"] - 1 <= half + 200
    assert [o["id"] for o in adaptive_outputs if "id" in o and "event" not in o] == \
        list(range(len(X)))


def test_a_bayesian_mixture_adapts_too():
    train = draw(np.random.default_rng(98), 6000)
    model = sm.BayesianGaussianMixture(5, random_state=0, init_params="random_from_data",
                                       max_iter=500).fit(train)
    bayesian = sm.AnomalyScorer(model, contamination=0.02).fit(train)
    X, injected, half = stream_with_shift(n=16_000)
    adaptive = flagged(bayesian.adapt(window=WINDOW).score_records(records(X)))
    assert adaptive[half + 2 * WINDOW:].mean() < 2 * 0.02
    assert adaptive[half:][injected[half:]].mean() >= 0.9


def test_slow_poisoning_is_not_learned(scorer):
    """Anomalies walking step by step from far away towards an empty region between the
    components: the model never learns them, so they stay flagged."""
    rng = np.random.default_rng(5)
    n = 20_000
    X = draw(rng, n)
    injected = rng.random(n) < 0.01
    target = np.array([4.0, 4.0, 6.0])  # > 5 sd from every component
    start = np.array([20.0, 20.0, 20.0])
    progress = np.linspace(0, 1, injected.sum())[:, None]
    X[injected] = start + progress * (target - start) + 0.3 * rng.normal(size=(injected.sum(), 3))
    outputs = list(scorer.adapt(window=WINDOW).score_records(records(X)))
    caught = flagged(outputs)[injected]
    assert caught.mean() >= 0.95
    assert caught[-20:].all()  # the last ones, at the target, too


def test_page_hinkley_fires_on_a_drop_and_not_on_a_stationary_stream():
    rng = np.random.default_rng(0)
    quiet = PageHinkley()
    scores = rng.normal(-5, 1, 50_000)
    scores[rng.random(50_000) < 0.01] = -1e300  # far anomalies count as 5 sd, not -inf
    assert all(quiet.update(s) is None for s in scores)
    test = PageHinkley()
    fired = [i for i, s in enumerate(np.concatenate([rng.normal(-5, 1, 2000),
                                                     rng.normal(-8, 1, 2000)]))
             if test.update(s) is not None]
    # a drop of 3 sd fires after about threshold / (3 - delta) = 35 records
    assert fired and 2000 < fired[0] < 2000 + 60


def test_drift_alarm_without_adaptation_and_what_cannot_adapt(scorer):
    X, _, _ = stream_with_shift(n=8000)
    watching = scorer.adapt(adapt=False)
    outputs = list(watching.score_records(records(X)))
    assert any(o.get("event") == "drift" for o in outputs)
    assert watching.model.means_.tolist() == scorer.model.means_.tolist()  # unchanged
    with pytest.raises(ValueError, match=r"keeps flagging the scorer's contamination"):
        sm.AnomalyScorer(scorer.model, contamination=None, threshold=-5.0).adapt()
    kmeans = sm.KMeans(3, random_state=0).fit(X[:1000])
    with pytest.raises(TypeError, match=r"KMeans cannot"):
        sm.AnomalyScorer(kmeans, contamination=0.02).fit(X[:1000]).adapt()


def test_a_snapshot_resumes_exactly_where_the_scorer_was(tmp_path, scorer):
    X, _, _ = stream_with_shift(n=8192)
    options = {"window": 1000, "snapshot_every": 1000, "max_latency_ms": 10_000.0}
    run = {k: v for k, v in options.items() if k != "max_latency_ms"}
    whole = list(scorer.adapt(**{k: v for k, v in run.items() if k != "snapshot_every"})
                 .score_records(records(X), max_latency_ms=10_000.0))
    first = scorer.adapt(snapshot=tmp_path / "s.npz", **run)
    list(first.score_records(records(X[:4096]), max_latency_ms=10_000.0))
    resumed = scorer.adapt(snapshot=tmp_path / "s.npz", **run)
    assert resumed.resumed and resumed.records == 4096 and resumed.applied == first.applied
    np.testing.assert_array_equal(resumed.model.means_, first.model.means_)
    assert resumed.scorer._offset() == first.scorer._offset()
    rest = list(resumed.score_records(
        ({"id": i + 4096, "x0": a, "x1": b, "x2": c} for i, (a, b, c) in
         enumerate(X[4096:].tolist())), max_latency_ms=10_000.0))
    assert rest == whole[len(whole) - len(rest):]  # as if never stopped


def test_damaged_or_foreign_snapshots_are_refused(tmp_path, scorer):
    X, _, _ = stream_with_shift(n=1000)
    path = tmp_path / "s.npz"
    list(scorer.adapt(snapshot=path, window=500).score_records(records(X)))
    with pytest.raises(sm.exceptions.SnapshotError, match=r"other options"):
        scorer.adapt(snapshot=path, window=600)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(sm.exceptions.SnapshotError, match=r"s\.npz: not a usable snapshot"):
        scorer.adapt(snapshot=path, window=500)


@pytest.mark.slow
def test_a_killed_scorer_restarted_with_the_same_arguments_resumes(tmp_path, scorer):
    import json
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time

    scorer.save(tmp_path / "m.npz")
    X, _, _ = stream_with_shift(n=6000)
    lines = [json.dumps({"id": i, "x0": a, "x1": b, "x2": c})
             for i, (a, b, c) in enumerate(X.tolist())]
    command = [os.path.join(os.path.dirname(sys.executable), "streammix"), "score",
               str(tmp_path / "m.npz"), "-", "--adapt", "--window", "500",
               "--snapshot", str(tmp_path / "state.npz"), "--snapshot-every", "1000"]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)

    def feed():  # from a thread: the child's output is read meanwhile (no pipe deadlock)
        child.stdin.write("\n".join(lines[:3500]) + "\n")
        child.stdin.flush()

    threading.Thread(target=feed, daemon=True).start()
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 3400 and time.monotonic() < deadline:  # past the snapshot after 3,000
        seen += '"score"' in child.stdout.readline()
    child.send_signal(signal.SIGKILL)  # no clean-up: the last snapshot is what is left
    child.wait()
    restarted = subprocess.run(command, input="\n".join(lines[3500:]) + "\n",
                               capture_output=True, text=True, timeout=120)
    assert restarted.returncode == 0, restarted.stderr
    said = restarted.stderr.splitlines()[0]
    match = re.fullmatch(rf"resumed from {re.escape(str(tmp_path / 'state.npz'))}: "
                         r"([\d,]+) records scored before, ([\d,]+) applied to the model", said)
    assert match, said
    scored, applied = (int(g.replace(",", "")) for g in match.groups())
    assert 3000 <= scored < 3500 and 0 < applied <= scored  # snapshots every 1,000 records
    outputs = [json.loads(line) for line in restarted.stdout.splitlines()]
    assert [o["id"] for o in outputs if "event" not in o] == list(range(3500, 6000))


def test_the_command_line_adapts_and_plots_the_scored_stream(tmp_path, scorer):
    import json

    from click.testing import CliRunner

    from streammix.cli import main

    scorer.save(tmp_path / "m.npz")
    X, _, _ = stream_with_shift(n=12_000)
    lines = [json.dumps({"id": i, "x0": a, "x1": b, "x2": c})
             for i, (a, b, c) in enumerate(X.tolist())]
    lines[7000] = '{"id": 7000, "x0": "n/a", "x1": 0, "x2": 0}'  # bad: an error record
    text = "\n".join(lines) + "\n"
    runner = CliRunner()
    done = runner.invoke(main, ["score", str(tmp_path / "m.npz"), "-", "--adapt", "--window",
                                "2000"], input=text)
    assert done.exit_code == 0, done.output
    outputs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["id"] for o in outputs if "event" not in o] == list(range(len(X)))
    assert "error" in next(o for o in outputs if o.get("id") == 7000)
    scored = [o for o in outputs if "score" in o]
    assert len(scored) == len(X) - 1
    assert all("threshold" in o for o in scored)
    assert any(o.get("event") == "drift" for o in outputs)
    assert "12000 records" in done.stderr and "1 errors" in done.stderr
    assert "drift events" in done.stderr
    (tmp_path / "scored.jsonl").write_text(done.stdout)
    plotted = runner.invoke(main, ["plot", "--stream", str(tmp_path / "scored.jsonl"),
                                   "-o", str(tmp_path / "stream.png")])
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "stream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    refused = runner.invoke(main, ["score", str(tmp_path / "m.npz"), "-", "--snapshot",
                                   str(tmp_path / "s.npz")], input=text[:200])
    assert refused.exit_code == 2 and "give --adapt too" in refused.output
    refused = runner.invoke(main, ["score", str(tmp_path / "m.npz"), "-", "--adapt",
                                   "--threshold", "-5"], input=text[:200])
    assert refused.exit_code == 2 and "fixed --threshold" in refused.output
    static = runner.invoke(main, ["score", str(tmp_path / "m.npz"), "-"], input=text)
    assert static.exit_code == 0 and '"event"' not in static.stdout  # as before: no alarm
    assert "drift" not in static.stderr


def test_an_update_the_maths_refuses_keeps_the_model_and_the_stream_going(scorer, monkeypatch):
    from streammix.exceptions import CollapsedComponentError

    X = draw(np.random.default_rng(4), 3000)  # stationary: small steps only
    adaptive = scorer.adapt(window=500)
    means = adaptive.model.means_.copy()

    def refuse(*args):
        raise CollapsedComponentError("a component collapsed")

    monkeypatch.setattr(type(adaptive.model), "_online_update", refuse)
    outputs = [o for o in adaptive.score_records(records(X)) if "score" in o]
    assert len(outputs) == len(X)  # every record scored
    assert adaptive.skipped_updates > 0 and adaptive.applied == 0
    np.testing.assert_array_equal(adaptive.model.means_, means)


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_clean_stop_of_the_stdin_scorer_writes_its_snapshot(tmp_path, scorer, signum):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    scorer.save(tmp_path / "m.npz")
    X, _, _ = stream_with_shift(n=500)
    child = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "streammix"), "score",
         str(tmp_path / "m.npz"), "-", "--adapt", "--snapshot", str(tmp_path / "state.npz"),
         "--snapshot-every", "1000000", "--snapshot-seconds", "3600"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdin.write("".join(json.dumps({"id": i, "x0": a, "x1": b, "x2": c}) + "\n"
                              for i, (a, b, c) in enumerate(X.tolist())))
    child.stdin.flush()  # and kept open: the stream has not ended
    seen, deadline = 0, time.monotonic() + 60
    while seen < 500 and time.monotonic() < deadline:
        seen += '"score"' in child.stdout.readline()
    assert seen == 500 and not (tmp_path / "state.npz").exists()
    child.send_signal(getattr(signal, signum))
    assert child.wait(timeout=30) == 128 + getattr(signal, signum)
    assert "Traceback" not in child.stderr.read()
    resumed = scorer.adapt(snapshot=tmp_path / "state.npz")
    assert resumed.resumed and resumed.records == 500


@pytest.mark.parametrize(("options", "events"), [
    ([], False), (["--drift"], True), (["--adapt"], True), (["--adapt", "--drift"], True),
    (["--adapt", "--no-drift"], False), (["--no-drift"], False)])
def test_the_drift_options_do_what_they_say(tmp_path, scorer, options, events):
    """--no-drift with --adapt was ignored (drift events came anyway); each combination of
    --adapt and --drift/--no-drift now gives events exactly when the drift test is on,
    on a stream whose shift fires it."""
    import json

    from click.testing import CliRunner

    from streammix.cli import main

    scorer.save(tmp_path / "m.npz")
    X, _, _ = stream_with_shift(n=8000)
    stdin = "".join(json.dumps({"id": i, "x0": a, "x1": b, "x2": c}) + "\n"
                    for i, (a, b, c) in enumerate(X.tolist()))
    done = CliRunner().invoke(main, ["score", str(tmp_path / "m.npz"), "-", *options],
                              input=stdin)
    assert done.exit_code == 0, done.output
    outputs = [json.loads(line) for line in done.stdout.splitlines()]
    assert sum("score" in o for o in outputs) == 8000
    assert any(o.get("event") == "drift" for o in outputs) == events
    assert all(("threshold" in o) == ("--adapt" in options) for o in outputs if "score" in o)


def test_the_command_line_reports_the_degenerate_updates_it_refused(tmp_path):
    """A run of 3,000 identical records holds at least 10 whole blocks of 256, each one
    degenerate: the summary line says each was refused (none is silently dropped)."""
    import json
    import re

    from click.testing import CliRunner

    from streammix.cli import main
    from tests.test_adaptive_threats import sim

    sim.calibrated().save(tmp_path / "m.npz")
    rng = np.random.default_rng(3)
    X = np.concatenate([sim.draw(rng, 1000), np.repeat(sim.CENTRES[:1] + 0.1, 3000, axis=0),
                        sim.draw(rng, 1000)])
    text = "".join(json.dumps({"id": i, "x0": a, "x1": b, "x2": c}) + "\n"
                   for i, (a, b, c) in enumerate(X.tolist()))
    done = CliRunner().invoke(main, ["score", str(tmp_path / "m.npz"), "-", "--adapt",
                                     "--window", "1000"], input=text)
    assert done.exit_code == 0, done.output
    refused = re.search(r"(\d+) degenerate updates refused", done.stderr)
    assert refused and 10 <= int(refused.group(1)) <= 13, done.stderr
    assert re.search(r"\d+ relearnt, \d+ not relearnt", done.stderr), done.stderr


def test_a_window_shorter_than_a_block_is_refused_in_one_line(tmp_path):
    from click.testing import CliRunner

    from streammix.cli import main
    from streammix.scoring.adaptive import BLOCK
    from tests.test_adaptive_threats import sim

    sim.calibrated().save(tmp_path / "m.npz")
    done = CliRunner().invoke(main, ["score", str(tmp_path / "m.npz"), "-", "--adapt",
                                     "--window", str(BLOCK - 1)], input="")
    assert done.exit_code == 2 and "--window" in done.output and str(BLOCK) in done.output


def test_a_snapshot_whose_block_disagrees_with_its_record_count_is_refused(tmp_path, scorer):
    """Blocks end at multiples of the record count: a snapshot whose unfinished block does
    not match its count would never end a block again (the learning would stop silently)."""
    import json

    X, _, _ = stream_with_shift(n=1000)
    path = tmp_path / "s.npz"
    list(scorer.adapt(snapshot=path, window=500).score_records(records(X)))
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    state = json.loads(arrays["state"].tobytes())
    assert len(arrays["block_rows"]) == state["records"] % 256  # as written (blocks of 256)
    state["records"] += 44
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(sm.exceptions.SnapshotError, match="unfinished block holds"):
        scorer.adapt(snapshot=path, window=500)
