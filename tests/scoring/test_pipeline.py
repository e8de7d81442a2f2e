"""The one record path: ids every transport can carry, NDJSON lines, the threshold rule,
the encoders, and the old module paths."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

import streammix as sm
from streammix.scoring import pipeline
from streammix.scoring.records import split_ndjson


@pytest.fixture(scope="module")
def scorer():
    X = np.random.default_rng(0).normal(size=(500, 2))
    return sm.AnomalyScorer(sm.GaussianMixture(1, random_state=0).fit(X), threshold=-6.0)


@pytest.mark.parametrize("bad_id", ['"\\ud800"', "1" + "0" * 400, "\ud800", 1 << 64,
                                    -(1 << 63) - 1, 10 ** 400])
def test_an_id_no_output_can_carry_is_an_error_record_in_place(scorer, bad_id):
    # JSON texts (the first two) and records given as Python objects (the others)
    bad = f'{{"id": {bad_id}, "x0": 0, "x1": 0}}' if isinstance(bad_id, str) and \
        bad_id.isascii() else {"id": bad_id, "x0": 0, "x1": 0}
    records = ['{"id": 1, "x0": 0.1, "x1": 0.2}', bad, '{"id": 3, "x0": 0.3, "x1": 0.1}']
    outputs = scorer.score_batch(records)
    assert [out["id"] for out in outputs] == [1, None, 3]
    assert "error" in outputs[1] and "score" in outputs[0] and "score" in outputs[2]
    assert all(json.loads(pipeline.json_line(out)) == out for out in outputs)


def test_64_bit_ids_and_unicode_text_ids_are_carried_back(scorer):
    ids = [(1 << 64) - 1, -(1 << 63), "caf\u00e9 \U0001f600", 2.5, True]
    outputs = scorer.score_batch([{"id": i, "x0": 0.0, "x1": 0.0} for i in ids])
    assert [out["id"] for out in outputs] == ids and not any("error" in o for o in outputs)


def test_ndjson_is_split_on_newlines_only():
    # U+2028, U+2029 and U+0085 are legal raw inside JSON strings (str.splitlines splits there)
    text = '{"id": "a\u2028b", "x0": 1}\n\n{"id": "c\u2029\u0085d", "x0": 2}\r\n'
    lines = split_ndjson(text)
    assert [json.loads(line)["id"] for line in lines] == ["a\u2028b", "c\u2029\u0085d"]


def test_the_threshold_rule_fails_closed():
    scores = np.array([-1.0, -2.0, np.nan, -np.inf, -2.0 - 1e-15])
    assert pipeline.flag(scores, -2.0).tolist() == [False, False, True, True, True]


def test_no_threshold_is_one_error_everywhere():
    X = np.random.default_rng(1).normal(size=(200, 2))
    bare = sm.AnomalyScorer(sm.GaussianMixture(1).fit(X))
    for call in (lambda: bare.predict(X), lambda: bare.score_batch([[0.0, 0.0]]),
                 lambda: list(bare.score_records([[0.0, 0.0]]))):
        with pytest.raises(sm.NotFittedError, match="no threshold yet"):
            call()


def test_outputs_beyond_the_float_range_stay_strict_json(scorer):
    out = scorer.score_batch([{"id": "far", "x0": 1e300, "x1": -1e300}])[0]
    assert out["anomaly"] is True
    assert np.isfinite(out["score"]) and np.isfinite(out["distance"])
    assert json.loads(pipeline.json_line(out)) == out
    fields = pipeline.output_fields(out)
    decoded = dict(zip(fields[::2], fields[1::2], strict=True))
    assert decoded["id"] == "far" and json.loads(decoded["score"]) == out["score"]
    assert json.loads(decoded["top_features"]) == out["top_features"]


def test_explanations_match_the_models_own_numbers(scorer):
    X = np.random.default_rng(2).normal(size=(50, 2)) * 3
    outputs = scorer.explain(X)
    np.testing.assert_allclose([o["score"] for o in outputs], scorer.score_samples(X),
                               rtol=1e-12)
    assert [o["cluster"] for o in outputs] == scorer.model.predict(X).tolist()
    assert [o["anomaly"] for o in outputs] == (scorer.predict(X) == -1).tolist()


@pytest.mark.parametrize(("old", "new"), [
    ("streammix.stream", "streammix.scoring.records"),
    ("streammix.adaptive", "streammix.scoring.adaptive"),
    ("streammix.serve.http", "streammix.scoring.http"),
    ("streammix.serve.redis_stream", "streammix.scoring.redis"),
    ("streammix.estimators.anomaly", "streammix.scoring.scorer"),
])
def test_old_module_paths_are_deprecated_aliases(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=new):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_old_anomaly_scorer_name_is_a_deprecated_alias():
    import streammix.estimators as estimators

    with pytest.warns(DeprecationWarning):
        assert estimators.AnomalyScorer is sm.AnomalyScorer


def test_measuring_the_depth_of_hostile_text_takes_linear_time():
    """An unterminated string of escaped quotes after 33 brackets made the old depth scan
    quadratic (a 1 MiB record: about an hour of CPU); now it is an error at once."""
    import time

    from streammix.scoring.records import RecordError, decode_json

    hostile = "[" * 33 + '"' + '\\"' * 100_000
    began = time.perf_counter()
    with pytest.raises(RecordError, match="not JSON"):
        decode_json(hostile)
    assert time.perf_counter() - began < 10.0  # the old scan: about two minutes
    deep = "[" * 40 + "1" + "]" * 40
    with pytest.raises(RecordError, match="nested deeper than 32"):
        decode_json(deep)
    assert decode_json(deep, max_depth=40) is not None
