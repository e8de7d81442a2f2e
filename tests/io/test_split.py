"""The held-out split: the same rows whatever the chunking, and a fit that never sees them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import streammix as sm
from streammix.core.random import row_uniforms
from streammix.io.split import split_rows
from tests.conftest import make_blobs, write_table

X = make_blobs(2000, seed=3)
SEED, FRACTION = 2**100 + 12345, 0.25


def _rows(source) -> np.ndarray:
    """Every row of ``source``, read chunk by chunk in plan order."""
    blocks = [block for chunk in source.plan() for _, block in source.read_chunk(chunk)]
    return np.concatenate(blocks)


def _mask() -> np.ndarray:
    """The rows held out: one Philox draw per row, computed for all rows at once."""
    return row_uniforms(SEED, 0, len(X))[:, 0] < FRACTION


@pytest.mark.parametrize("row_group", [37, 101, 2000])
def test_the_parts_are_the_same_rows_whatever_the_chunking(tmp_path, row_group):
    path = write_table(tmp_path / "x.parquet", X, row_group)
    source = sm.as_source(str(path), chunk_size=row_group)
    held = split_rows(source, SEED, FRACTION, holdout=True)
    kept = split_rows(source, SEED, FRACTION, holdout=False)
    np.testing.assert_array_equal(_rows(held), X[_mask()])
    np.testing.assert_array_equal(_rows(kept), X[~_mask()])
    assert held.n_rows + kept.n_rows == len(X)
    starts = [chunk.start for chunk in held.plan()]
    assert starts == list(np.cumsum([0, *[c.n_rows for c in held.plan()]])[:-1])
    in_memory = split_rows(sm.as_source(X), SEED, FRACTION, holdout=True)
    np.testing.assert_array_equal(_rows(in_memory), X[_mask()])


def test_the_held_out_share_is_the_fraction():
    n = 200_000
    held = split_rows(sm.as_source(np.zeros((n, 1))), 7, 0.2, holdout=True).n_rows
    assert abs(held / n - 0.2) < 5 * np.sqrt(0.2 * 0.8 / n)  # five binomial deviations


def test_a_fit_on_the_kept_rows_equals_scikit_learn_on_them(tmp_path):
    path = write_table(tmp_path / "x.parquet", X, 53)
    kept = split_rows(sm.as_source(str(path)), SEED, FRACTION, holdout=False)
    start = X[[0, 1200, 1900]]
    ours = sm.GaussianMixture(3, means_init=start, tol=1e-8, max_iter=300).fit(kept)
    theirs = SkGaussianMixture(3, means_init=start, tol=1e-8, max_iter=300).fit(X[~_mask()])
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-6)


def test_weights_follow_their_rows_or_are_dropped(tmp_path):
    weights = np.arange(len(X), dtype=np.float64) + 1
    source = sm.as_source(X).with_weights(weights)
    kept = split_rows(source, SEED, FRACTION, holdout=False)
    np.testing.assert_array_equal(kept.sample_weight, weights[~_mask()])
    assert not split_rows(source, SEED, FRACTION, holdout=True, weighted=False).weighted
    path = write_table(tmp_path / "x.parquet", X, 71)
    wrapped = split_rows(sm.as_source(str(path)).with_weights(weights), SEED, FRACTION,
                         holdout=False)
    got = np.concatenate([wrapped.chunk_weights(c) for c in wrapped.plan()])
    np.testing.assert_array_equal(got, weights[~_mask()])
