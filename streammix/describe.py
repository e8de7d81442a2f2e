"""What a fitted model is, as plain JSON-able data (``streammix info``, ``GET /model``)."""

from __future__ import annotations

import numpy as np

from .estimators.bayesian_mixture import EFFECTIVE_WEIGHT, BayesianGaussianMixture
from .estimators.mixture import BaseMixture

#: ``info`` hides the components of a Bayesian mixture that hold about nothing: a weight
#: under 0.1 %, or under one row's worth of the training data.
EMPTY_WEIGHT, EMPTY_ROWS = 1e-3, 1.0


def feature_names(model) -> list[str]:
    """The model's feature names, or ``x0, x1, ...`` when it was fitted without names."""
    names = getattr(model, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else \
        [f"x{j}" for j in range(model.n_features_in_)]


def describe(model) -> dict:
    """Type, parameters, features, components (weights, means), convergence, threshold.

    A Bayesian mixture adds its effective components, each component's expected
    training rows (``component_rows``; their sum ``training_rows``, the weight of
    the rows it was fitted on), the components that hold about nothing
    (``empty_components``) and its lower bound per row (``lower_bound_per_row``:
    its ``lower_bound_`` is a sum over the rows, a GaussianMixture's a mean).
    """
    info = {"model": type(model).__name__, "params": {}, "n_features": model.n_features_in_,
            "feature_names": feature_names(model)}
    for name, value in model.get_params().items():
        info["params"][name] = value.tolist() if isinstance(value, np.ndarray) else value
    if isinstance(model, BaseMixture):
        info.update(n_components=int(model.means_.shape[0]), weights=model.weights_.tolist(),
                    means=model.means_.tolist(), converged=model.converged_,
                    n_iter=model.n_iter_, lower_bound=model.lower_bound_)
    else:
        info.update(n_components=int(model.cluster_centers_.shape[0]),
                    means=model.cluster_centers_.tolist(), inertia=model.inertia_,
                    n_iter=model.n_iter_)
    if isinstance(model, BayesianGaussianMixture):
        # the posterior keeps each component's expected rows: beta_k = beta_0 + N_k
        rows = np.asarray(model.mean_precision_, dtype=np.float64) - \
            float(model.mean_precision_prior_)
        total = float(rows.sum())
        empty = (np.asarray(model.weights_) < EMPTY_WEIGHT) | (rows < EMPTY_ROWS)
        info.update(effective_components=model.effective_components().tolist(),
                    effective_weight=EFFECTIVE_WEIGHT, component_rows=rows.tolist(),
                    training_rows=total, empty_components=np.flatnonzero(empty).tolist(),
                    # the GMM's lower_bound_ is a mean per row, the Bayesian one a sum
                    lower_bound_per_row=model.lower_bound_ / total if total > 0 else None)
    info.update(anomaly_threshold=getattr(model, "anomaly_threshold_", None),
                anomaly_contamination=getattr(model, "anomaly_contamination_", None))
    return info
