"""AnomalyScorer: exact calibration, sklearn's outlier conventions, explanations, streams."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import streammix as sm
from streammix.core import quantile
from streammix.scoring import scorer as anomaly
from streammix.scoring.records import micro_batches, text_records
from tests.conftest import make_blobs, write_table

X = make_blobs(3000, seed=8)


@pytest.fixture
def small_sample(monkeypatch):
    """Make the calibration sample smaller than the data, so both passes run."""
    monkeypatch.setattr(anomaly, "CALIBRATION_SAMPLE", 300)


@pytest.mark.parametrize("contamination", [0.001, 0.01, 0.137])
def test_threshold_equals_np_percentile_in_two_passes(small_sample, contamination):
    gmm = sm.GaussianMixture(3, random_state=0).fit(X)
    scorer = sm.AnomalyScorer(gmm, contamination=contamination).fit(X)
    expected = np.percentile(gmm.score_samples(X), 100 * contamination)
    np.testing.assert_allclose(scorer.offset_, expected, rtol=1e-12)


def test_out_of_core_calibration_and_a_missed_bracket(small_sample, monkeypatch, tmp_path):
    path = write_table(tmp_path / "x.parquet", X, 250)
    model = sm.KMeans(3, random_state=0).fit(path)
    scores = -np.sqrt(((X[:, None, :] - model.cluster_centers_) ** 2).sum(-1).min(1))
    expected = np.percentile(scores, 2.0)
    scorer = sm.AnomalyScorer(model, contamination=0.02)
    np.testing.assert_allclose(scorer.fit(path).offset_, expected, rtol=1e-12)
    monkeypatch.setattr(quantile, "_MARGIN_SIGMAS", -50.0)  # an empty bracket: must widen
    np.testing.assert_allclose(scorer.fit(path).offset_, expected, rtol=1e-12)


def test_outlier_detector_conventions():
    gmm = sm.GaussianMixture(3, random_state=0).fit(X)
    scorer = sm.AnomalyScorer(gmm, contamination=0.05).fit(X)
    np.testing.assert_allclose(scorer.score_samples(X), gmm.score_samples(X))
    np.testing.assert_allclose(scorer.decision_function(X), gmm.score_samples(X) - scorer.offset_)
    labels = scorer.predict(X)
    assert set(np.unique(labels)) == {-1, 1}
    assert abs((labels == -1).mean() - 0.05) <= 1 / len(X)
    assert scorer.fraction_below(X) == (labels == -1).mean()
    fixed = sm.AnomalyScorer(gmm, threshold=-5.0)
    np.testing.assert_array_equal(fixed.predict(X), np.where(gmm.score_samples(X) < -5, -1, 1))
    with pytest.raises(sm.NotFittedError, match=r"no threshold yet"):
        sm.AnomalyScorer(gmm).predict(X)


def test_explanations_match_closed_forms():
    gmm = sm.GaussianMixture(3, random_state=0).fit(X)
    scorer = sm.AnomalyScorer(gmm, threshold=-8.0, top_features=2)
    probe = X[:50].copy()
    probe[7, 2] += 25.0  # far out along feature 2 only
    out = scorer.explain(probe)
    proba = gmm.predict_proba(probe)
    inverse = np.linalg.inv(gmm.covariances_)
    for i, record in enumerate(out):
        k = record["cluster"]
        assert k == proba[i].argmax()
        np.testing.assert_allclose(record["probability"], proba[i].max(), rtol=1e-9)
        r = probe[i] - gmm.means_[k]
        np.testing.assert_allclose(record["distance"], np.sqrt(r @ inverse[k] @ r), rtol=1e-9)
    assert out[7]["anomaly"] and out[7]["top_features"][0] == "x2"
    kmeans = sm.KMeans(3, random_state=0).fit(X)
    record = sm.AnomalyScorer(kmeans, threshold=-3.0).explain(probe[7:8])[0]
    centre = kmeans.cluster_centers_[record["cluster"]]
    np.testing.assert_allclose(record["distance"], np.linalg.norm(probe[7] - centre))
    assert record["score"] == -record["distance"] and record["probability"] is None


def test_stream_gives_one_output_per_record_in_order():
    gmm = sm.GaussianMixture(3, random_state=0).fit(X)
    scorer = sm.AnomalyScorer(gmm, contamination=0.01).fit(X)
    records = [{"id": "a", "x0": 0, "x1": 0, "x2": 0}, "{not json", {"id": "c", "x0": 1},
               {"id": "d", "x0": "1.5", "x1": "2", "x2": "0"}, [0.5, 0.5, 0.5],
               {"id": "f", "x0": float("nan"), "x1": 0, "x2": 0}, {"id": "g", "x0": True,
                                                                  "x1": 0, "x2": 0}]
    out = list(scorer.score_records(records, batch_size=2))
    assert [o["id"] for o in out] == ["a", None, "c", "d", None, "f", "g"]
    assert ["error" in o for o in out] == [False, True, True, False, False, True, True]
    assert "not JSON" in out[1]["error"] and "missing field 'x1'" in out[2]["error"]
    assert "not finite" in out[5]["error"] and "not numeric" in out[6]["error"]
    row = np.array([[1.5, 2.0, 0.0]])
    np.testing.assert_allclose(out[3]["score"], gmm.score_samples(row)[0])


def test_text_records_read_json_lines_and_csv():
    assert list(text_records(['{"a": 1}', "", '{"a": 2}'])) == ['{"a": 1}', '{"a": 2}']
    rows = list(text_records(["x0,x1", "1,2", "3"]))
    assert rows[0] == {"x0": "1", "x1": "2"} and isinstance(rows[1], ValueError)


def test_a_slow_trickle_is_scored_as_it_arrives():
    release = threading.Event()

    def trickle():
        yield 1
        yield 2
        release.wait(5)  # the producer stalls
        yield 3

    began = time.monotonic()
    batches = micro_batches(trickle(), batch_size=100, max_latency=0.05)
    first = next(batches)
    waited = time.monotonic() - began
    release.set()
    assert first == [1, 2] and waited < 1.0  # not held back until the batch fills
    assert list(batches) == [[3]]


def test_threshold_is_saved_with_the_model(tmp_path):
    model = sm.KMeans(3, random_state=0).fit(X)
    scorer = sm.AnomalyScorer(model, contamination=0.02).fit(X)
    scorer.save(tmp_path / "m.npz")
    loaded = sm.AnomalyScorer(sm.load(tmp_path / "m.npz"))
    assert loaded.offset_ == scorer.offset_
    np.testing.assert_array_equal(loaded.predict(X), scorer.predict(X))


FAR = np.array([[1e200, -1e200, 0.0], [1e300, 0.0, 0.0], [1.7e308, -1.7e308, 1e308],
                [1e155, 1e155, 1e155], [-1e160, 1.0, 1.0]])


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
def test_rows_far_beyond_the_model_score_minus_inf_and_are_flagged(kind):
    from sklearn.mixture import GaussianMixture as SkGMM

    ours = sm.GaussianMixture(3, covariance_type=kind, random_state=0).fit(X)
    theirs = SkGMM(3, covariance_type=kind)  # the same model, set by hand
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(theirs, name, getattr(ours, name))
    with np.errstate(all="ignore"):
        expected = theirs.score_samples(FAR)
    scores = ours.score_samples(FAR)
    assert not np.isnan(scores).any()
    # -inf where scikit-learn says -inf (or NaN); the same value, to rounding, elsewhere.
    np.testing.assert_allclose(scores, np.where(np.isnan(expected), -np.inf, expected),
                               rtol=1e-9)
    proba = ours.predict_proba(FAR)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(ours.predict(FAR), proba.argmax(axis=1))
    scorer = sm.AnomalyScorer(ours, contamination=0.01).fit(X)
    assert (scorer.predict(FAR) == -1).all()
    moderate = X[:5] * 1e3  # far, but within the fast path's range: as scikit-learn
    np.testing.assert_allclose(ours.score_samples(moderate), theirs.score_samples(moderate),
                               rtol=1e-9)


def test_stream_outputs_of_far_records_are_valid_json_and_anomalies():
    import json

    scorer = sm.AnomalyScorer(sm.GaussianMixture(3, random_state=0).fit(X), contamination=0.01)
    scorer.fit(X)
    records = [json.dumps({"id": i, "x0": r[0], "x1": r[1], "x2": r[2]}) for i, r in
               enumerate(FAR)]
    outputs = list(scorer.score_records(records))
    assert len(outputs) == len(FAR) and all(out["anomaly"] for out in outputs)
    for out in outputs:
        json.loads(json.dumps(out, allow_nan=False))  # no NaN/Infinity anywhere


def test_kmeans_distances_of_far_rows_are_exact_not_nan():
    model = sm.KMeans(3, random_state=0).fit(X)
    distances = model.transform(FAR[:2])
    exact = [[np.hypot(*(FAR[i, :2] - c[:2]) / 1e100) * 1e100 if i == 0 else 1e300
              for c in model.cluster_centers_] for i in range(2)]
    np.testing.assert_allclose(distances, exact, rtol=1e-12)
    scorer = sm.AnomalyScorer(model, contamination=0.01).fit(X)
    assert (scorer.predict(FAR) == -1).all() and not np.isnan(scorer.score_samples(FAR)).any()


def test_junk_before_json_never_turns_the_stream_into_csv():
    lines = ["hello there", '{"x0": 1}', "x0,x1", "1,2", '{"x0": 3}']
    out = list(text_records(lines, fields=["x0", "x1"]))
    assert isinstance(out[0], ValueError) and "neither a JSON record" in str(out[0])
    assert out[1] == '{"x0": 1}' and out[2] == {"x0": "1", "x1": "2"} and out[3] == '{"x0": 3}'


def test_record_limits_are_options():
    from streammix.scoring.records import RecordError, parse_record, read_lines

    nested = "[" * 40 + "1" + "]" * 40
    with pytest.raises(RecordError, match=r"nested deeper than 32"):
        parse_record(nested, ["a"], "id")
    with pytest.raises(RecordError, match=r"not numeric"):  # allowed depth, wrong content
        parse_record(nested, ["a"], "id", max_depth=64)
    with pytest.raises(RecordError, match=r"longer than the limit of 10"):
        parse_record('{"a": 1.00000001}', ["a"], "id", max_bytes=10)
    import io

    lines = list(read_lines(io.BytesIO(b"ok\n" + b"x" * 100 + b"\nok\n"), max_bytes=10))
    assert lines[0] == b"ok\n" and isinstance(lines[1], RecordError) and lines[2] == b"ok\n"
