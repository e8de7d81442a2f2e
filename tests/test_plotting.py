"""The figures' choices: which plane, which colours, which warnings."""

from __future__ import annotations

import numpy as np
import pytest

import streammix as sm
from streammix import plotting


def whitened_clusters(d=20, seed=0):
    """Three clusters apart along two of 20 directions, and five wider directions that
    separate nothing: the principal axes (30 % of the variance) show the clusters on top
    of one another."""
    rng = np.random.default_rng(seed)
    offsets = np.zeros((3, d))
    offsets[1, 0] = offsets[2, 1] = 8.0
    scale = np.r_[1.0, 1.0, np.full(5, 4.0), np.ones(d - 7)]
    return np.concatenate([rng.normal(0, 1, (2000, d)) * scale + o for o in offsets])


def separation(plane, X):
    """Share of the plane's variance that the true clusters explain (between / total)."""
    points = X @ plane.T
    labels = np.repeat(np.arange(3), len(X) // 3)
    means = np.stack([points[labels == k].mean(0) for k in range(3)])
    between = ((means[labels] - points.mean(0)) ** 2).sum()
    return between / ((points - points.mean(0)) ** 2).sum()


@pytest.mark.parametrize("Model", [sm.GaussianMixture, sm.KMeans])
def test_whitened_data_is_shown_on_the_discriminant_plane(Model):
    X = whitened_clusters()
    model = Model(3, random_state=0).fit(X)
    names = [f"x{j}" for j in range(X.shape[1])]
    plane, labels, _, how = plotting.projection(X, names, model=model)
    assert how.startswith("discriminant projection") and labels[0] == "discriminant axis 1"
    np.testing.assert_allclose(np.linalg.norm(plane, axis=1), 1.0)
    assert abs(plane[0] @ plane[1]) < 1e-9
    principal = np.linalg.svd(X - X.mean(0), full_matrices=False)[2][:2]
    assert separation(plane, X) > 0.9 > 0.6 > separation(principal, X)
    # data whose principal axes carry the variance keep the principal plane
    stretched = X * np.r_[10.0, 10.0, np.full(5, 0.25), np.ones(X.shape[1] - 7)]
    fitted = Model(3, random_state=0).fit(stretched)
    assert plotting.projection(stretched, names, model=fitted)[3] == "principal axes"


def test_cluster_colours_leave_grey_to_the_contours():
    from matplotlib.colors import to_rgb

    plt = plotting._pyplot()
    for n in (3, 9, 15):
        colours = plotting._cluster_colours(plt, n).colors
        assert all(np.ptp(to_rgb(c)) > 0.05 for c in colours)


def test_edge_of_the_grid_is_warned():
    assert "widen -k upwards" in plotting.edge_warning([1, 2, 3], 3)
    assert "widen -k downwards" in plotting.edge_warning([2, 3, 4], 2)
    assert plotting.edge_warning([1, 2, 3], 2) is None
    assert plotting.edge_warning([1, 2, 3], 1) is None  # k = 1 is the smallest there is


def _offsets(ax):
    return [np.asarray(c.get_offsets()) for c in ax.collections]


def test_selection_puts_every_type_on_one_scale_and_rings_the_chosen_point(tmp_path):
    from types import SimpleNamespace

    # diag is 5e7 worse than full everywhere; each type against its own best would hide it
    bic = {("full", 1): 100.0, ("full", 2): 40.0, ("full", 3): 70.0,
           ("diag", 1): 5e7 + 90.0, ("diag", 2): 5e7 + 20.0, ("diag", 3): 5e7 + 30.0}
    table = [{"n_components": k, "covariance_type": kind, "bic": v, "aic": v - 5.0}
             for (kind, k), v in bic.items()]
    result = SimpleNamespace(table=table, criterion="bic",
                             best_=SimpleNamespace(n_components=2, covariance_type="full"))
    fig = plotting.plot_selection(result, tmp_path / "select.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog" and "all" in ax.get_ylabel()
    curves = {line.get_label().split()[0]: line.get_xydata() for line in ax.get_lines()}
    np.testing.assert_allclose(curves["full"][:, 1], [60.0, 0.0, 30.0])
    np.testing.assert_allclose(curves["diag"][:, 1], [5e7 + 50.0, 5e7 - 20.0, 5e7 - 10.0])
    (ring,) = [o for o in _offsets(ax) if len(o)]
    np.testing.assert_allclose(ring, [[2, 0.0]])  # on full's k=2, not on diag's minimum


def bayesian_with_empty_components():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.5, (400, 2)) for c in ([0, 0], [6, 0])])
    model = sm.BayesianGaussianMixture(8, random_state=0, max_iter=300).fit(X)
    return model, X


def test_bayesian_plot_hides_empty_components_unless_asked(tmp_path):
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Ellipse

    model, X = bayesian_with_empty_components()
    used = np.zeros(8, bool)
    used[model.effective_components()] = True
    assert 0 < used.sum() < 8  # the fixture has both kinds
    labels = model.predict(X)
    hidden = plotting.plot_model(model, X, labels, tmp_path / "a.png")
    ellipses = [p for p in hidden.axes[0].patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 3 * used.sum()
    assert all(e.get_edgecolor()[3] == 1.0 for e in ellipses)  # opaque: strong colours
    assert all(to_rgba(e.get_edgecolor())[:3] != to_rgba(plotting.EMPTY_COLOUR)[:3]
               for e in ellipses)
    shown = plotting.plot_model(model, X, labels, tmp_path / "b.png", show_empty=True)
    assert len([p for p in shown.axes[0].patches if isinstance(p, Ellipse)]) == 3 * 8


def test_static_stream_draws_the_given_threshold_and_shows_the_normal_scores(tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.normal(-10.0, 1.0, 1000)
    scores[::50] = -1e300  # far anomalies: 20 of them
    threshold = -13.0
    outputs = [{"id": i, "score": float(s), "anomaly": bool(s < threshold)}
               for i, s in enumerate(scores)]
    fig = plotting.plot_stream(outputs, tmp_path / "s.png", threshold=threshold)
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("threshold")]
    np.testing.assert_allclose(line.get_ydata(), threshold)
    low, high = ax.get_ylim()
    normal = scores[scores > threshold]
    assert low < normal.min() and high > normal.max()
    assert high - low < 20  # the normal scores' spread, not 1e300
    assert any("20 scores below" in t.get_text() for t in ax.get_legend().get_texts())


def test_cli_plot_stream_takes_a_static_run_threshold_from_the_model(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from streammix.cli import main

    X = np.random.default_rng(0).normal(size=(2000, 2))
    scorer = sm.AnomalyScorer(sm.GaussianMixture(2, random_state=0).fit(X),
                              contamination=0.02).fit(X)
    scorer.save(tmp_path / "m.npz")
    scored = tmp_path / "scored.jsonl"
    scored.write_text("".join(json.dumps({"id": i, "score": -3.0 - i % 3, "anomaly": False})
                              + "\n" for i in range(50)))
    seen = {}
    original = plotting.plot_stream
    def spy(outputs, path, **options):
        seen.update(options)
        return original(outputs, path, **options)

    monkeypatch.setattr(plotting, "plot_stream", spy)
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "m.npz"), "--stream", str(scored),
                                       "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert seen["threshold"] == pytest.approx(scorer.offset_)


def _cli(*args):
    from click.testing import CliRunner

    from streammix.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_plot_options_are_refused_where_they_do_nothing(tmp_path):
    """No option is ignored: --show-empty off a Bayesian plot, a threshold for a stream
    whose records carry theirs (adaptive), MODEL and --threshold together, a MODEL without
    a threshold, --threshold without --stream: each one line, exit status 2."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    X = np.random.default_rng(0).normal(size=(200, 2))
    sm.GaussianMixture(1, random_state=0).fit(X).save(tmp_path / "bare.npz")  # no threshold
    pq.write_table(pa.table({"x0": X[:, 0], "x1": X[:, 1]}), tmp_path / "d.parquet")
    static = tmp_path / "static.jsonl"
    static.write_text("".join(json.dumps({"id": i, "score": -3.0, "anomaly": False})
                              + "\n" for i in range(5)))
    adaptive = tmp_path / "adaptive.jsonl"
    adaptive.write_text("".join(json.dumps({"id": i, "score": -3.0, "anomaly": False,
                                            "threshold": -9.0}) + "\n" for i in range(5)))
    cases = [(("plot", tmp_path / "bare.npz", "--stream", static), "no anomaly threshold"),
             (("plot", "--stream", adaptive, "--threshold", -9), "adaptive run"),
             (("plot", tmp_path / "bare.npz", "--stream", static, "--threshold", -9),
              "not both"),
             (("plot", "--stream", static, "--show-empty"), "--show-empty"),
             (("plot", tmp_path / "bare.npz", tmp_path / "d.parquet", "--threshold", -9),
              "--threshold applies to --stream"),
             (("plot", tmp_path / "bare.npz", tmp_path / "d.parquet", "--show-empty"),
              "Bayesian"),
             (("plot", "--stream", adaptive, "--features", "x0,x1"), "--features applies"),
             (("plot", "--stream", adaptive, "--seed", 3), "--seed applies")]
    for args, message in cases:
        result = _cli(*args, "-o", tmp_path / "x.png")
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) \
            <= 3  # click's usage line, its hint, and the one-line reason
