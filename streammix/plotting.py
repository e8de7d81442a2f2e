"""PNG figures: clusters with covariance ellipses and density, and selection curves.

Points are a sample of the data. The plane is two chosen features, or the
first two principal axes of the sample; because the projection is linear, the
projected Gaussians are the exact marginals of the mixture on that plane, so
ellipses and density contours are the model's own, not approximations.
"""

from __future__ import annotations

import numpy as np

from .core import gaussian as gm
from .estimators.gaussian_mixture import GaussianMixture


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def projection(X: np.ndarray, names, features=None):
    """(2 x d matrix, axis labels, centre) for two features, or the first principal axes."""
    d = X.shape[1]
    if features:
        unknown = [f for f in features if f not in names and not (f.isdigit() and int(f) < d)]
        if len(features) != 2 or unknown:
            what = f"no feature {', '.join(map(repr, unknown))}; " if unknown else ""
            raise ValueError(f"--features: {what}give two of {', '.join(names)} (or their "
                             "positions, from 0)")
        index = [names.index(f) if f in names else int(f) for f in features]
        matrix = np.zeros((2, d))
        matrix[0, index[0]] = matrix[1, index[1]] = 1.0
        return matrix, [names[i] for i in index], np.zeros(d)
    if d == 1:
        raise ValueError("a plot needs at least two features")
    centre = X.mean(axis=0)
    _, singular, axes = np.linalg.svd(X - centre, full_matrices=False)
    share = singular**2 / (singular**2).sum()
    return axes[:2], [f"principal axis {i + 1} ({share[i]:.0%})" for i in range(2)], centre


def _full_covariances(model: GaussianMixture):
    kind, cov, d = model.covariance_type, model.covariances_, model.means_.shape[1]
    if kind == "full":
        return cov
    if kind == "tied":
        return np.repeat(cov[None], model.n_components, axis=0)
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])


def plot_model(model, X, labels, path, *, features=None, anomalies=None, title=None):
    """Write a PNG of ``X`` (a sample) coloured by ``labels`` with the model on top."""
    plt = _pyplot()
    names = [str(n) for n in getattr(model, "feature_names_in_", [])] or \
        [f"x{j}" for j in range(X.shape[1])]
    matrix, axis_names, centre = projection(X, names, features)
    points = (X - centre) @ matrix.T
    fig, ax = plt.subplots(figsize=(9, 7), dpi=110)
    cmap = plt.get_cmap("tab20" if labels.max() >= 10 else "tab10")
    ax.scatter(points[:, 0], points[:, 1], c=labels % cmap.N, cmap=cmap, s=4, alpha=0.45,
               linewidths=0, vmin=0, vmax=cmap.N - 1)
    if isinstance(model, GaussianMixture):
        means = (model.means_ - centre) @ matrix.T
        covs = np.einsum("ij,kjl,ml->kim", matrix, _full_covariances(model), matrix)
        _density_contours(ax, model.weights_, means, covs, points)
        for k, (mean, cov) in enumerate(zip(means, covs, strict=True)):
            for sigma in (1, 2, 3):
                _ellipse(ax, mean, cov, sigma, cmap(k % cmap.N))
        ax.scatter(means[:, 0], means[:, 1], marker="+", s=120, c="black", linewidths=1.5,
                   label="component means")
    else:
        centres = (model.cluster_centers_ - centre) @ matrix.T
        ax.scatter(centres[:, 0], centres[:, 1], marker="X", s=120, c="black",
                   label="cluster centres")
    if anomalies is not None and anomalies.any():
        ax.scatter(points[anomalies, 0], points[anomalies, 1], marker="x", s=30, c="red",
                   linewidths=1.2, label=f"anomalies in all {X.shape[1]} features "
                                         f"({anomalies.sum()} of {len(X)})")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title or f"{type(model).__name__}: {len(np.unique(labels))} clusters, "
                          f"{len(X):,} sampled rows")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ellipse(ax, mean, cov, sigma, color):
    from matplotlib.patches import Ellipse

    values, vectors = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    width, height = 2 * sigma * np.sqrt(np.maximum(values[::-1], 0))
    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, color=color,
                         lw=1.6 / sigma, alpha=0.9))


def _density_contours(ax, weights, means, covs, points):
    """Contours of the mixture's marginal density on the plotted plane."""
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.1 * (high - low)
    gx, gy = np.meshgrid(np.linspace(low[0] - pad[0], high[0] + pad[0], 160),
                         np.linspace(low[1] - pad[1], high[1] + pad[1], 160))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    chol = gm.precision_cholesky(covs + 1e-12 * np.eye(2), "full")
    params = gm.GaussianParams(np.asarray(weights), means, chol, "full")
    log_density = gm.log_prob_resp(params, grid)[0].reshape(gx.shape)
    top = log_density.max()
    ax.contour(gx, gy, log_density, levels=np.linspace(top - 12, top, 8), colors="grey",
               linewidths=0.6, alpha=0.7)


def plot_selection(result, path):
    """BIC and AIC against the number of components, one line per covariance type."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    kinds = list(dict.fromkeys(row["covariance_type"] for row in result.table))
    for ax, criterion in zip(axes, ("bic", "aic"), strict=True):
        for kind in kinds:
            rows = [r for r in result.table if r["covariance_type"] == kind]
            ax.plot([r["n_components"] for r in rows], [r[criterion] for r in rows],
                    marker="o", label=kind)
        best = result.best_
        chosen = next(r for r in result.table if (r["n_components"], r["covariance_type"]) ==
                      (best.n_components, best.covariance_type))
        ax.scatter([chosen["n_components"]], [chosen[criterion]], s=160, facecolors="none",
                   edgecolors="red", linewidths=2, label="chosen", zorder=3)
        ax.set_xlabel("number of components")
        ax.set_ylabel(criterion.upper() + " (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Model selection by {result.criterion.upper()}: best "
                 f"{best.n_components} components, {best.covariance_type}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_kmeans_selection(result, path):
    """Inertia (the elbow) and silhouette against k."""
    plt = _pyplot()
    ks = [r["n_clusters"] for r in result.table]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    axes[0].plot(ks, [r["inertia"] for r in result.table], marker="o")
    axes[0].set_ylabel("inertia (look for the elbow)")
    axes[1].plot(ks, [r["silhouette"] for r in result.table], marker="o", color="tab:green")
    axes[1].axvline(result.best_.n_clusters, color="red", ls="--", label="highest")
    axes[1].set_ylabel(f"silhouette (sample of {result.sample_size} rows)")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("number of clusters k")
        ax.grid(alpha=0.3)
    fig.suptitle(f"k-means selection: highest silhouette at k={result.best_.n_clusters}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
