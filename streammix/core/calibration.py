"""What a calibration may hold: a contamination in (0, 0.5], and a threshold within
the range of scores the model gives its own distribution.

A threshold above every score the model can give flags every record; one
below all but a vanishing share of the scores of the model's own data flags
none. Both are nonsense for an anomaly threshold, and these bounds say where
they begin.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import chi2

from .gaussian import _LOG_2PI, GaussianParams

#: The share of the model's own distribution that may score below the lower bound.
TAIL = 1e-9


def check_contamination(contamination, name="contamination") -> float:
    """``contamination`` as a float, or a ValueError naming ``name``: a share of
    anomalies in (0, 0.5] (beyond half, the anomalies are the normal records)."""
    if isinstance(contamination, bool) or not isinstance(contamination, int | float | np.number) \
            or not 0 < contamination <= 0.5:
        raise ValueError(f"{name} must be in (0, 0.5], got {contamination!r}")
    return float(contamination)


def outside(score_range, threshold) -> str | None:
    """Why ``threshold`` is outside ``score_range`` (what it would flag), or None."""
    low, high = score_range
    if not math.isfinite(threshold):
        return f"threshold {threshold!r} is not a finite number"
    if threshold > high:
        return (f"threshold {threshold:.6g} is above every score the model gives its own "
                f"data (at most {high:.6g}): it flags every record")
    if threshold < low:
        return (f"threshold {threshold:.6g} is below the scores of all but a share 1e-9 of "
                f"the model's own data (from {low:.6g}): it flags almost none")
    return None


def mixture_score_range(params: GaussianParams, sampled_weights: np.ndarray,
                        tail: float = TAIL) -> tuple[float, float]:
    """``(low, high)``: the log density of a mixture never exceeds ``high``, and a row
    drawn from it (components in proportion ``sampled_weights``) scores below ``low``
    with probability at most ``tail``.

    Why: log p(x) = logsumexp_k(t_k + c_k - m_k(x) / 2), with t_k the component's
    weight term, c_k = -d/2 log(2 pi) + log_det_k and m_k the squared Mahalanobis
    distance. So log p(x) <= logsumexp_k(t_k + c_k); and log p(x) >= t_k + c_k -
    m_k(x) / 2, where m_k of a row drawn from component k is chi-square with d
    degrees of freedom: below its 1 - ``tail`` quantile but for a share ``tail``.
    """
    n_features = params.means.shape[1]
    with np.errstate(divide="ignore"):
        top = params.weight_terms() - 0.5 * n_features * _LOG_2PI + params.log_det
    high = float(np.logaddexp.reduce(top))
    drawn = (np.asarray(sampled_weights) > 0) & np.isfinite(top)
    if not drawn.any():
        return -math.inf, high
    low = float(np.min(top[drawn])) - 0.5 * float(chi2.isf(tail, n_features))
    return low, high


def widened(score_range, *values) -> tuple[float, float]:
    """``score_range`` widened to hold ``values`` (finite ones)."""
    low, high = score_range
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min([low, *finite]), max([high, *finite])
