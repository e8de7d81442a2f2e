"""Lloyd assignment: column-major rows give what row-major rows give; nearest centres."""

from __future__ import annotations

import numpy as np

from streammix.core import kmeans as km
from streammix.core.kernels import GOLDEN
from tests._compare import assert_labels_agree
from tests.conftest import make_blobs


def test_column_major_assignment_equals_row_major_and_fingerprints_global_rows():
    rows = np.repeat(make_blobs(2_000, seed=7), 20, axis=0)  # several tile groups and a partial one
    centers, reference, start, k = rows[[0, 900, 1_999]] + 0.25, rows.mean(axis=0), 123_456, 3
    outputs = {}
    for layout, X in (("rows", np.ascontiguousarray(rows)), ("columns", np.asfortranarray(rows))):
        sums, counts, membership = np.zeros((k, rows.shape[1])), np.zeros(k), np.zeros(k)
        labels, dist = km.assign(X, centers, reference, sums, counts, membership, start)
        outputs[layout] = labels, dist, sums, counts, membership
    # Column-major rows are copied row-major a group of tiles at a time: the same tiles in
    # other buffers, equal to rounding (a BLAS may round by alignment). A misplaced group or
    # tile would move whole tiles of labels, sums and fingerprints.
    columns, rows_ = outputs["columns"], outputs["rows"]
    assert_labels_agree(columns[0], rows_[0])
    for ours, theirs in zip(columns[1:], rows_[1:], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)

    for labels, dist, sums, counts, membership in (columns, rows_):
        weyl = (start + np.arange(len(rows))) * GOLDEN
        expected = np.bincount(labels, weyl - np.floor(weyl), k)
        np.testing.assert_allclose(membership, expected, rtol=1e-12)
        np.testing.assert_array_equal(counts, np.bincount(labels, minlength=k))
        by_label = [(rows[labels == j] - reference).sum(axis=0) for j in range(k)]
        np.testing.assert_allclose(sums, by_label, rtol=1e-9, atol=1e-9)
        squared = ((rows[:, None, :] - centers[None]) ** 2).sum(axis=2)
        # the chosen centre is the nearest to rounding (an exact tie may go either way)
        chosen = squared[np.arange(len(rows)), labels]
        np.testing.assert_allclose(chosen, squared.min(axis=1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dist, squared.min(axis=1), rtol=1e-9, atol=1e-9)
