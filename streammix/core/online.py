"""Stepwise online EM for Gaussian mixtures (Cappé & Moulines 2009; Liang & Klein 2009).

The sufficient statistics of the model are a running weighted average: after
a mini-batch, s_t = (1 - gamma_t) s_{t-1} + gamma_t s(batch), where s(batch)
are the batch's statistics per unit of row weight, and the parameters are the
M-step of s_t (the same :func:`~streammix.core.gaussian.estimate_parameters`
as batch EM, on moments centred near the data).

The running statistics need not be kept: the M-step is invertible, so
s_{t-1} is what the current parameters imply (:func:`implied_stats`), and a
model from ``fit`` or from a file continues with ``partial_fit`` as it is.
"""

from __future__ import annotations

import numpy as np

from . import gaussian as gm


def step_size(step: int, *, decay: float, offset: float, forgetting_factor=None,
              weight: float = 1.0) -> float:
    """gamma_t = (t + offset)^-decay for step t = 1, 2, ...; or, with a forgetting
    factor f, 1 - f**weight: the past's weight is multiplied by f for every unit of
    row weight of the batch (a memory of about 1 / (1 - f) rows, whatever the
    batch sizes)."""
    if forgetting_factor is not None:
        return 1.0 - forgetting_factor**weight
    return float((step + offset) ** -decay)


# The second moments about the shift, per unit of row weight, that the M-step turns
# into the given covariances (delta: the means relative to the shift).
def _full_implied_second(covariances, weights, delta, reg_covar):
    d = delta.shape[1]
    spread = covariances - reg_covar * np.eye(d) + delta[:, :, None] * delta[:, None, :]
    return weights[:, None, None] * spread


def _tied_implied_second(covariance, weights, delta, reg_covar):
    return (covariance - reg_covar * np.eye(delta.shape[1])) * weights.sum() + \
        (weights[:, None] * delta).T @ delta


def _diagonal_implied_second(variances, weights, delta, reg_covar):
    return weights[:, None] * (variances - reg_covar + delta**2)


_IMPLIED_SECOND = {
    "full": _full_implied_second,
    "tied": _tied_implied_second,
    "diag": _diagonal_implied_second,
    "spherical": lambda variances, weights, delta, reg_covar: _diagonal_implied_second(
        np.repeat(np.asarray(variances)[:, None], delta.shape[1], 1), weights, delta, reg_covar),
}


def implied_stats(params: gm.GaussianParams, shift: np.ndarray, reg_covar: float
                  ) -> gm.GaussianStats:
    """The statistics per unit of row weight whose M-step gives ``params`` back
    (centred on ``shift``; ``reg_covar`` taken out of the covariances)."""
    weights = params.weights / params.weights.sum()
    delta = params.means - shift
    second = _IMPLIED_SECOND[params.covariance_type](params.covariances, weights, delta,
                                                     reg_covar)
    return gm.GaussianStats(1, 0.0, weights, weights[:, None] * delta, second)


def blend(running: gm.GaussianStats, batch: gm.GaussianStats, gamma: float) -> gm.GaussianStats:
    """(1 - gamma) ``running`` + gamma ``batch`` per unit of row weight (both centred alike)."""
    scale = gamma / batch.n_rows
    return gm.GaussianStats(
        1, 0.0,
        (1 - gamma) * running.resp_sum + scale * batch.resp_sum,
        (1 - gamma) * running.first + scale * batch.first,
        (1 - gamma) * running.second + scale * batch.second)


def step(params: gm.GaussianParams, batch: gm.GaussianStats, gamma: float, reg_covar: float):
    """One stepwise-EM update from a batch's statistics (computed with ``params``,
    so centred on ``params.shift()``): the new (weights, means, covariances)."""
    shift = params.shift()
    running = implied_stats(params, shift, reg_covar)
    return gm.estimate_parameters(blend(running, batch, gamma), shift, reg_covar,
                                  params.covariance_type)
