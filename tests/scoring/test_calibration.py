"""AnomalyScorer's calibration: held out of the fit, around an unfitted model (clone,
cross_val_score, GridSearchCV), and values in range (issue 28 items 3-4, issue 31 item 3)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.utils.validation import check_is_fitted

import streammix as sm
from streammix.core.random import row_uniforms
from streammix.estimators.base import check_random_state
from streammix.io.split import split_seed
from streammix.scoring import adaptive
from streammix.scoring.configure import scoring_for
from tests.conftest import make_blobs, write_table

X = make_blobs(3000, seed=11)
START = X[[0, 1700, 2800]]  # one row per cluster: every fit starts alike


def held_rows(random_state, fraction) -> np.ndarray:
    """The rows a split seeded by ``random_state`` holds out, from the generator itself."""
    return row_uniforms(split_seed(check_random_state(random_state)), 0, len(X))[:, 0] < fraction


# -- held-out calibration (28.3) -----------------------------------------------------------
@pytest.mark.parametrize("where", ["memory", "parquet"])
def test_holdout_fits_on_the_kept_rows_and_calibrates_on_the_others(tmp_path, where):
    data = X if where == "memory" else str(write_table(tmp_path / "x.parquet", X, 97))
    model = sm.GaussianMixture(3, means_init=START, tol=1e-8)
    scorer = sm.AnomalyScorer(model, contamination=0.05, calibration="holdout",
                              holdout_fraction=0.3, random_state=5).fit(data)
    held = held_rows(5, 0.3)
    theirs = SkGaussianMixture(3, means_init=START, tol=1e-8).fit(X[~held])
    np.testing.assert_allclose(scorer.model_.means_, theirs.means_, rtol=1e-6, atol=1e-8)
    expected = np.percentile(theirs.score_samples(X[held]), 5)
    np.testing.assert_allclose(scorer.offset_, expected, rtol=1e-6)
    with pytest.raises(NotFittedError):  # the parameter stays as given
        check_is_fitted(scorer.model)


def test_holdout_refuses_a_fitted_model_and_bad_fractions():
    fitted = sm.GaussianMixture(1).fit(X)
    with pytest.raises(ValueError, match=r"calibration='holdout' fits the model"):
        sm.AnomalyScorer(fitted, calibration="holdout").fit(X)
    for fraction in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=r"holdout_fraction must be in \(0, 1\)"):
            sm.AnomalyScorer(sm.GaussianMixture(1), calibration="holdout",
                             holdout_fraction=fraction).fit(X)
    with pytest.raises(ValueError, match=r"calibration must be one of"):
        sm.AnomalyScorer(sm.GaussianMixture(1), calibration="test").fit(X)


def test_holdout_flags_new_normal_records_at_the_contamination():
    """30 features, 400 rows: the model fits its training rows far better than new
    ones, so a threshold calibrated on them flags many more new normals than 5 %."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(30, 30)) / 6
    draw = lambda n: rng.normal(size=(n, 30)) @ mixing  # noqa: E731
    train, new = draw(400), draw(100_000)
    rates = {}
    for calibration in ("train", "holdout"):
        scorer = sm.AnomalyScorer(sm.GaussianMixture(2, random_state=0), contamination=0.05,
                                  calibration=calibration, random_state=0).fit(train)
        rates[calibration] = float((scorer.predict(new) == -1).mean())
    assert rates["train"] > 0.15
    assert abs(rates["holdout"] - 0.05) < abs(rates["train"] - 0.05) / 2


def test_fit_on_the_command_line_holds_out_rows(tmp_path):
    from click.testing import CliRunner

    from streammix.cli import main

    data = write_table(tmp_path / "x.parquet", X, 250)
    out = tmp_path / "m.npz"
    result = CliRunner().invoke(main, ["fit", str(data), "-k", "3", "-o", str(out), "--seed",
                                       "4", "--contamination", "0.02",
                                       "--calibration-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    assert "held-out 25%" in result.output
    model = sm.load(out)
    held = pd.DataFrame(X[held_rows(4, 0.25)], columns=["f0", "f1", "f2"])
    expected = np.percentile(model.score_samples(held), 2)
    np.testing.assert_allclose(model.anomaly_threshold_, expected, rtol=1e-9)
    assert model.anomaly_contamination_ == 0.02


# -- an unfitted model is fitted (28.4) ---------------------------------------------------
def test_a_clone_around_an_unfitted_model_fits_it():
    scorer = clone(sm.AnomalyScorer(sm.GaussianMixture(3, random_state=0), contamination=0.05))
    scorer.fit(X)
    reference = sm.GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(scorer.model_.means_, reference.means_, rtol=1e-9)
    np.testing.assert_allclose(scorer.offset_,
                               np.percentile(reference.score_samples(X), 5), rtol=1e-9)


def test_a_fitted_model_is_kept_as_it_is_and_a_frozen_one_too():
    fitted = sm.GaussianMixture(3, random_state=0).fit(X)
    means = fitted.means_.copy()
    other = make_blobs(3000, seed=12) + 0.5
    for model in (fitted, FrozenEstimator(fitted)):
        scorer = sm.AnomalyScorer(model, contamination=0.05).fit(other)
        assert scorer.model_ is fitted
        np.testing.assert_array_equal(fitted.means_, means)
        np.testing.assert_allclose(scorer.offset_,
                                   np.percentile(fitted.score_samples(other), 5), rtol=1e-9)


def _labelled():
    rng = np.random.default_rng(1)
    outliers = rng.uniform(-15, 20, size=(150, 3))
    data = np.concatenate([X, outliers])
    y = np.r_[np.ones(len(X)), -np.ones(len(outliers))]
    order = rng.permutation(len(y))
    return data[order], y[order]


def test_cross_val_score_works_as_for_isolation_forest():
    data, y = _labelled()
    folds = KFold(3, shuffle=True, random_state=0)
    scorer = sm.AnomalyScorer(sm.GaussianMixture(3, random_state=0), contamination=0.05)
    ours = cross_val_score(scorer, data, y, cv=folds, scoring="accuracy")
    forest = cross_val_score(IsolationForest(contamination=0.05, random_state=0), data, y,
                             cv=folds, scoring="accuracy")
    by_hand = []
    for train, test in folds.split(data):
        model = sm.GaussianMixture(3, random_state=0).fit(data[train])
        threshold = np.percentile(model.score_samples(data[train]), 5)
        flags = np.where(model.score_samples(data[test]) < threshold, -1, 1)
        by_hand.append((flags == y[test]).mean())
    np.testing.assert_allclose(ours, by_hand, atol=1.5 / len(y))
    assert ours.mean() > 0.95 and forest.mean() > 0.9  # both find the scattered outliers


def test_grid_search_picks_the_number_of_clusters():
    search = GridSearchCV(sm.AnomalyScorer(sm.GaussianMixture(1, random_state=0)),
                          {"model__n_components": [1, 2, 3]},
                          cv=KFold(3, shuffle=True, random_state=0),
                          scoring=lambda est, data, y=None: est.score_samples(data).mean())
    search.fit(X)
    assert search.best_params_ == {"model__n_components": 3}
    assert search.best_estimator_.model_.n_components == 3


# -- values in range (31.3) --------------------------------------------------------------
@pytest.mark.parametrize("contamination", [0.9, -1, 0.0, float("nan")])
def test_a_contamination_outside_0_to_half_is_refused_everywhere(contamination):
    fitted = sm.GaussianMixture(3, random_state=0).fit(X)
    message = r"contamination must be in \(0, 0.5\]"
    with pytest.raises(ValueError, match=message):
        sm.AnomalyScorer(fitted, contamination=contamination).fit(X)
    with pytest.raises(ValueError, match=message):
        sm.AnomalyScorer(fitted, contamination=contamination, threshold=-6.0).adapt()
    with pytest.raises(ValueError, match=message):
        scoring_for(fitted, threshold=None if contamination else -6.0,
                    contamination=contamination, adapt=bool(contamination))
    calibrated = sm.AnomalyScorer(fitted, contamination=contamination)
    calibrated.offset_ = -6.0
    with pytest.raises(ValueError, match=message):
        calibrated.save("never.npz")


def test_half_is_a_contamination():
    fitted = sm.GaussianMixture(3, random_state=0).fit(X)
    scorer = sm.AnomalyScorer(fitted, contamination=0.5).fit(X)
    np.testing.assert_allclose(scorer.offset_, np.median(fitted.score_samples(X)), rtol=1e-9)


@pytest.mark.parametrize("kind", ["GaussianMixture", "BayesianGaussianMixture"])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_the_score_range_holds_the_models_own_scores(kind, covariance_type):
    model = getattr(sm, kind)(3, covariance_type=covariance_type, random_state=0).fit(X)
    low, high = sm.AnomalyScorer(model, contamination=0.01).fit(X).score_range_
    draws = sm.GaussianMixture(3, covariance_type=covariance_type)
    draws.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    own = model.score_samples(sm.GaussianMixture.sample(draws, 300_000)[0]) \
        if kind == "BayesianGaussianMixture" else model.score_samples(model.sample(300_000)[0])
    assert own.max() <= high and own.min() > low  # the closed form bounds 300,000 draws
    assert high - own.max() < 1.0  # and is near the highest density


def test_an_explicit_threshold_outside_the_range_warns_and_is_not_saved(tmp_path):
    fitted = sm.GaussianMixture(3, random_state=0).fit(X)
    for threshold, what in ((1e308, "flags every record"), (-1e308, "flags almost none")):
        with pytest.warns(sm.ThresholdWarning, match=what):
            scorer = sm.AnomalyScorer(fitted, threshold=threshold).fit(X)
        with pytest.warns(sm.ThresholdWarning, match=what):
            scoring_for(fitted, threshold=threshold)
        with pytest.raises(ValueError, match=rf"not saved: .*{what}"):
            scorer.save(tmp_path / "m.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sm.AnomalyScorer(fitted, threshold=-8.0).fit(X).save(tmp_path / "m.npz")
    assert sm.load(tmp_path / "m.npz").anomaly_threshold_ == -8.0


def test_a_calibrated_file_records_its_range_and_refuses_a_threshold_outside(tmp_path):
    from tests.estimators.test_model_files import rewrite

    for model in (sm.GaussianMixture(3, random_state=0), sm.KMeans(3, random_state=0)):
        scorer = sm.AnomalyScorer(model, contamination=0.01).fit(X)
        scorer.save(tmp_path / "m.npz")
        loaded = sm.load(tmp_path / "m.npz")
        low, high = loaded.anomaly_score_range_
        scores = scorer.score_samples(X)
        assert low < scores.min() and scores.max() <= high  # the training data lies inside
        for threshold in (1e308, -1e308):
            rewrite(tmp_path / "m.npz", lambda m, t=threshold: m["attributes"].update(
                anomaly_threshold_=t))
            with pytest.raises(sm.ModelFileError, match=r"'anomaly_threshold_': threshold"):
                sm.load(tmp_path / "m.npz")


def test_an_adaptive_snapshot_keeps_a_lagging_threshold_loadable():
    import io

    fitted = sm.GaussianMixture(3, random_state=0).fit(X)
    high = fitted._score_range()[1]
    raw = adaptive._model_bytes(fitted, high + 1.0, 0.01)  # above the model's range
    loaded = sm.load(io.BytesIO(raw.tobytes()))
    assert loaded.anomaly_threshold_ == high + 1.0
    assert loaded.anomaly_score_range_[1] >= high + 1.0


def test_holdout_with_a_given_threshold_is_refused_and_a_new_model_scores():
    """Held-out rows with a given threshold would be read for nothing; and a model given
    after a fit (set_params) is the one that scores, not the one fitted before."""
    X = np.random.default_rng(0).normal(size=(400, 2))
    with pytest.raises(ValueError, match="given threshold"):
        sm.AnomalyScorer(sm.GaussianMixture(2), threshold=-5.0,
                         calibration="holdout").fit(X)
    scorer = sm.AnomalyScorer(sm.GaussianMixture(1, random_state=0), threshold=-5.0).fit(X)
    assert scorer.model_.n_components == 1
    scorer.set_params(model=sm.GaussianMixture(3, random_state=0).fit(X))
    assert scorer.model_.n_components == 3
