"""Comparisons between two *different* computations of the same result.

Different code (ours and scikit-learn's), different inputs (data offset by 1e6) or
another CPU's rounding agree to rounding, never to the bit. These helpers say how
far they may differ and still fail on a real bug. Exact equality is for the same
computation replayed (resume, chunking invariance by design): the tests say so
where they use it.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone


def matched_agreement(labels, reference) -> float:
    """The fraction of rows with the same label once the labels of ``labels`` are
    matched one to one to those of ``reference`` (Hungarian, on the confusion matrix)."""
    labels, reference = np.asarray(labels).ravel(), np.asarray(reference).ravel()
    assert labels.shape == reference.shape, (labels.shape, reference.shape)
    k = int(max(labels.max(), reference.max())) + 1
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, reference), 1)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return confusion[rows, cols].sum() / len(labels)


def assert_labels_agree(labels, reference, at_least=0.999):
    """Labels from two computations agree on >= 99.9 % of the rows after matching.

    A row whose two best components differ by less than the rounding of the
    parameters may go either way on another CPU; a wrong model, a wrong
    assignment or a shifted tile mislabels far more than 0.1 % of the rows.
    """
    agreement = matched_agreement(labels, reference)
    assert agreement >= at_least, f"labels agree on {agreement:.3%} of the rows after matching"


def same_stop(ours, theirs, *data, **fit_params):
    """``theirs``, or when it stopped one iteration away from ``ours``, the same run
    stopped where ours stopped: the model to compare ``ours`` with, iteration for iteration.

    Both stop when a change falls below ``tol``; when that change sits within
    rounding of ``tol``, two computations (or two CPUs) may stop one iteration
    apart. So the iteration counts must agree within one, and when they differ
    ``theirs`` is fitted again on ``data`` (a clone: the same start) for exactly
    ``ours.n_iter_`` iterations with tol=0, so that the parameters are still
    compared at the same iteration and to the same tolerance. A stopping rule on
    another scale misses by more than one iteration; a miscounted one compares
    the parameters of different iterations, which differ far beyond rounding.
    """
    assert abs(ours.n_iter_ - theirs.n_iter_) <= 1, (ours.n_iter_, theirs.n_iter_)
    if ours.n_iter_ == theirs.n_iter_:
        return theirs
    again = clone(theirs).set_params(tol=0.0, max_iter=ours.n_iter_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Warning)  # max_iter reached: the point of it
        return again.fit(*data, **fit_params)
