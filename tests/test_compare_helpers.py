"""The comparison helpers of tests/_compare.py fail where they should."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGMM

import streammix as sm
from tests._compare import assert_labels_agree, matched_agreement, same_stop
from tests.conftest import make_blobs

X = make_blobs()
START = {"means_init": X[[0, 300, 599]] + 0.7, "weights_init": np.full(3, 1 / 3),
         "random_state": 0}  # a fixed start: k-means labels set the first covariances


def test_labels_agree_up_to_a_permutation_and_not_beyond():
    labels = np.repeat([0, 1, 2], 1000)
    assert matched_agreement((labels + 1) % 3, labels) == 1.0  # renamed components
    flipped = labels.copy()
    flipped[:2] = 1  # 2 rows of 3000 moved: within 0.1 %
    assert_labels_agree(flipped, labels)
    flipped[:4] = 1  # 4 rows: beyond
    with pytest.raises(AssertionError, match=r"99.867% of the rows"):
        assert_labels_agree(flipped, labels)


@pytest.mark.parametrize("Model", [SkGMM, sm.GaussianMixture])
def test_same_stop_compares_at_our_iteration_and_refuses_two_off(Model):
    ours = Model(3, tol=1e-6, **START).fit(X)
    assert same_stop(ours, ours, X) is ours
    with pytest.warns(Warning):  # stopped by max_iter
        early = Model(3, tol=0.0, max_iter=ours.n_iter_ - 1, **START).fit(X)
        too_early = Model(3, tol=0.0, max_iter=ours.n_iter_ - 2, **START).fit(X)
    again = same_stop(ours, early, X)
    assert again.n_iter_ == ours.n_iter_
    # the same code from the same start for as many iterations: the same computation
    np.testing.assert_array_equal(again.means_, ours.means_)
    with pytest.raises(AssertionError):
        same_stop(ours, too_early, X)
