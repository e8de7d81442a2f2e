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
