"""Lloyd assignment: column-major rows give exactly what row-major rows give."""

from __future__ import annotations

import numpy as np

from streammix.core import kmeans as km
from streammix.core.kernels import GOLDEN
from tests.conftest import make_blobs


def test_column_major_assignment_equals_row_major_and_fingerprints_global_rows():
    rows = np.repeat(make_blobs(2_000, seed=7), 20, axis=0)  # several tile groups and a partial one
    centers, reference, start, k = rows[[0, 900, 1_999]] + 0.25, rows.mean(axis=0), 123_456, 3
    outputs = {}
    for layout, X in (("rows", np.ascontiguousarray(rows)), ("columns", np.asfortranarray(rows))):
        sums, counts, membership = np.zeros((k, rows.shape[1])), np.zeros(k), np.zeros(k)
        labels, dist = km.assign(X, centers, reference, sums, counts, membership, start)
        outputs[layout] = labels, dist, sums, counts, membership
    for ours, theirs in zip(outputs["columns"], outputs["rows"], strict=True):
        np.testing.assert_array_equal(ours, theirs)

    labels, dist, sums, counts, membership = outputs["columns"]
    weyl = (start + np.arange(len(rows))) * GOLDEN
    expected = np.bincount(labels, weyl - np.floor(weyl), k)
    np.testing.assert_allclose(membership, expected, rtol=1e-12)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=k))
    squared = ((rows[:, None, :] - centers[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(labels, squared.argmin(axis=1))
    np.testing.assert_allclose(dist, squared.min(axis=1), rtol=1e-9, atol=1e-9)
