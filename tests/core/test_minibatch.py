"""Mini-batch algebra: one task equals sequential Sculley updates; merges compose."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core import minibatch as mb
from streammix.core.random import row_uniforms
from tests.conftest import make_blobs

X = make_blobs(500, seed=4)
CENTERS = X[[0, 250, 499]] + 0.5


def sequential(centers, counts, rows, batch_size, seed, start=0):
    """Sculley's algorithm written plainly: per-centre learning rate 1 / count."""
    centers, counts = centers.copy(), counts.astype(float).copy()
    order = np.argsort(row_uniforms(seed, start, len(rows))[:, 0], kind="stable")
    for begin in range(0, len(order), batch_size):
        batch = rows[np.sort(order[begin : begin + batch_size])]
        labels = ((batch[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(centers)):
            members = batch[labels == j]
            if len(members):
                counts[j] += len(members)
                centers[j] += (members - centers[j]).sum(0) / counts[j]
    return centers, counts


@settings(max_examples=20, deadline=None)
@given(batch_size=st.integers(1, 200), prior=st.integers(0, 50))
def test_one_task_equals_sequential_minibatches(batch_size, prior):
    counts = np.full(3, float(prior))
    stats = mb.run_batches((CENTERS, counts, batch_size, 7), X, 0)
    ours, our_counts, _ = mb.apply_step(CENTERS, counts, stats)
    expected, expected_counts = sequential(CENTERS, counts, X, batch_size, 7)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(our_counts, expected_counts)


def test_merged_step_is_one_update_from_summed_statistics():
    counts = np.array([5.0, 0.0, 9.0])
    a = mb.run_batches((CENTERS, counts, 64, 1), X[:200], 0)
    b = mb.run_batches((CENTERS, counts, 64, 1), X[200:], 200)
    ab, ba = a.merge(b), b.merge(a)
    np.testing.assert_allclose(ab.offsets, ba.offsets)
    np.testing.assert_array_equal(ab.counts, a.counts + b.counts)
    assert ab.n_rows == 500
    # the reassignment sample is the k rows with the smallest per-row keys overall
    keys = row_uniforms(1, 0, 500)[:, 0]
    np.testing.assert_array_equal(np.sort(ab.sample_keys), np.sort(keys)[:3])


def test_starving_centre_moves_onto_a_row():
    centers = np.vstack([CENTERS[:2], [[1e3, 1e3, 1e3]]])
    counts = np.array([100.0, 80.0, 0.0])
    stats = mb.run_batches((centers, counts, 100, 3), X, 0)
    moved_centers, moved_counts, n = mb.reassign_starving(centers, counts, stats, 0.01,
                                                          np.random.default_rng(0))
    assert n == 1
    assert any(np.array_equal(moved_centers[2], row) for row in X)
    assert moved_counts[2] == 80.0  # reset to the smallest other count
