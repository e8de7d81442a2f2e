"""The picture of docs/user-guide.md: the weights of 10-component fits on 3-cluster data.

Run:  .venv/bin/python benchmarks/plot_bayesian_weights.py [docs/images/bayesian-weights.png]

Three fits of 10 components on the same 30,000 rows drawn from 3 Gaussians:
GaussianMixture (every component gets a share); BayesianGaussianMixture
(Dirichlet process prior) grown from 10 single rows (``random_from_data``):
three components keep the weight, the rest go to zero; and the same model
from the default k-means start, which cuts the 3 clusters into 10 pieces that
variational inference merges only slowly (scikit-learn's behaves the same).
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import streammix as sm
    from streammix.estimators.bayesian_mixture import EFFECTIVE_WEIGHT

    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "docs", "images", "bayesian-weights.png")
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0], [2.0, 7.0, 3.0]])
    X = np.concatenate([rng.normal(c, 1.0, (10_000, 3)) for c in centres])
    fits = {
        "GaussianMixture": sm.GaussianMixture(10, random_state=0, max_iter=500),
        "BayesianGaussianMixture, Dirichlet process\nfrom 10 rows (random_from_data)":
            sm.BayesianGaussianMixture(10, random_state=0, max_iter=1000,
                                       init_params="random_from_data"),
        "BayesianGaussianMixture, Dirichlet process\nfrom k-means (the default)":
            sm.BayesianGaussianMixture(10, random_state=0, max_iter=1000),
    }
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=110, sharey=True)
    for ax, (title, model) in zip(axes, fits.items(), strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sm.ConvergenceWarning)
            weights = np.sort(model.fit(X).weights_)[::-1]
        used = weights > EFFECTIVE_WEIGHT
        ax.bar(np.arange(10), weights, color=np.where(used, "tab:blue", "0.75"))
        ax.axhline(EFFECTIVE_WEIGHT, color="red", lw=0.8, ls="--")
        state = "converged" if model.converged_ else "not converged"
        ax.set_title(f"{title}\n{used.sum()} components above {EFFECTIVE_WEIGHT:.0%} "
                     f"({model.n_iter_} iterations, {state})", fontsize=9)
        ax.set_xlabel("component (by weight)")
        ax.set_xticks(range(10))
    axes[0].set_ylabel("weight")
    fig.suptitle("10 components fitted to 3 clusters (30,000 rows x 3)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
