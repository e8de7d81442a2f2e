"""PNG figures: clusters with covariance ellipses and density, and selection curves.

Points are a sample of the data. The plane is two chosen features, the
first two principal axes of the sample, or — when those carry little of the
variance (whitened data) — the two directions that best separate the
component means (a discriminant projection); the title says which. Because
every projection is linear, the projected Gaussians are the exact marginals of
the mixture on that plane, so ellipses and density contours are the model's
own, not approximations.
"""

from __future__ import annotations

import numpy as np

from .core import gaussian as gm
from .estimators.bayesian_mixture import EFFECTIVE_WEIGHT as EMPTY_WEIGHT
from .estimators.mixture import BaseMixture

#: Rows drawn from the data to show, by default.
SAMPLE_ROWS = 5000


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Below this share of the variance on the first two principal axes, the plane is
#: the discriminant one: principal axes of whitened data show no cluster apart.
PCA_SHARE_MIN = 0.5


def projection(X: np.ndarray, names, features=None, model=None):
    """(2 x d matrix, axis labels, centre, name of the projection).

    Two features; else the first two principal axes of ``X``; else, when
    those hold less than ``PCA_SHARE_MIN`` of the variance and ``model`` has
    at least two components, :func:`discriminant_axes` of its means.
    """
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
        return matrix, [names[i] for i in index], np.zeros(d), "two features"
    if d == 1:
        raise ValueError("a plot needs at least two features")
    centre = X.mean(axis=0)
    _, singular, axes = np.linalg.svd(X - centre, full_matrices=False)
    share = singular**2 / (singular**2).sum()
    if share[:2].sum() < PCA_SHARE_MIN and model is not None and _n_centres(model) >= 2:
        axes = discriminant_axes(model, X)
        return axes, [f"discriminant axis {i + 1}" for i in range(2)], centre, (
            f"discriminant projection (the principal axes hold only {share[:2].sum():.0%})")
    return axes[:2], [f"principal axis {i + 1} ({share[i]:.0%})" for i in range(2)], centre, \
        "principal axes"


def _n_centres(model) -> int:
    centres = getattr(model, "means_", getattr(model, "cluster_centers_", None))
    return 0 if centres is None else len(centres)


def discriminant_axes(model, X) -> np.ndarray:
    """Two unit directions that best separate the component means (Fisher's criterion).

    The generalised eigenvectors of (between-means scatter, pooled within
    covariance): the model's weighted covariances for a mixture, the sample's
    covariance for k-means. With two components there is one such direction;
    the second axis is then the sample's principal axis orthogonal to it.
    """
    from scipy import linalg

    if isinstance(model, BaseMixture):
        means, weights = model.means_.astype(np.float64), model.weights_.astype(np.float64)
        within = np.einsum("k,kij->ij", weights, _full_covariances(model))
    else:
        means = model.cluster_centers_.astype(np.float64)
        weights = np.full(len(means), 1 / len(means))
        within = np.cov(X, rowvar=False)
    d = means.shape[1]
    spread = means - weights @ means
    between = np.einsum("k,ki,kj->ij", weights, spread, spread)
    within = within + 1e-9 * np.trace(within) / d * np.eye(d)
    _, vectors = linalg.eigh(between, within)
    first = vectors[:, -1] / np.linalg.norm(vectors[:, -1])
    if len(means) > 2:
        second = vectors[:, -2]
    else:  # the principal axis of the rows with the first direction taken out
        rest = (X - X.mean(axis=0)) - np.outer((X - X.mean(axis=0)) @ first, first)
        second = np.linalg.svd(rest, full_matrices=False)[2][0]
    second = second - (second @ first) * first
    return np.stack([first, second / np.linalg.norm(second)])


def _full_covariances(model: BaseMixture):
    kind, cov, d = model.covariance_type, model.covariances_, model.means_.shape[1]
    if kind == "full":
        return cov
    if kind == "tied":
        return np.repeat(cov[None], model.n_components, axis=0)
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])


def plot_sample(model, data, path, *, features=None, sample_size=SAMPLE_ROWS, seed=0,
                show_empty=False):
    """Write a PNG of a seeded sample of ``data`` (rows drawn in one pass, out-of-core)
    coloured by ``model``'s clusters, with the model on top and, when it has a
    threshold, its anomalies marked (see :func:`plot_model`)."""
    from .engine import sample_rows
    from .io import ArraySource
    from .scoring import AnomalyScorer

    source = model._source(data, fitted=True)
    with model._engine() as engine:
        rows = sample_rows(engine, source, sample_size, np.random.default_rng(seed))
    sample = ArraySource(rows, dtype=source.dtype)  # the sample: rows of the fitted columns
    sample.feature_names = source.feature_names
    anomalies = None
    if getattr(model, "anomaly_threshold_", None) is not None:
        anomalies = AnomalyScorer(model).predict(sample) == -1
    return plot_model(model, rows, model.predict(sample), path, features=features,
                      anomalies=anomalies, show_empty=show_empty)


def plot_model(model, X, labels, path, *, features=None, anomalies=None, title=None,
               show_empty=False):
    """Write a PNG of ``X`` (a sample) coloured by ``labels`` with the model on top.

    A variational mixture's empty components (weight at most ``EMPTY_WEIGHT``)
    are left out unless ``show_empty`` (then grey and dashed); the effective
    ones are drawn in full colour. Returns the (closed) figure.
    """
    plt = _pyplot()
    names = [str(n) for n in getattr(model, "feature_names_in_", [])] or \
        [f"x{j}" for j in range(X.shape[1])]
    matrix, axis_names, centre, how = projection(X, names, features, model)
    points = (X - centre) @ matrix.T
    fig, ax = plt.subplots(figsize=(9, 7), dpi=110)
    cmap = _cluster_colours(plt, int(labels.max()) + 1)
    ax.scatter(points[:, 0], points[:, 1], c=labels % cmap.N, cmap=cmap, s=5, alpha=0.7,
               linewidths=0, vmin=0, vmax=cmap.N - 1)
    if isinstance(model, BaseMixture):
        from matplotlib.lines import Line2D

        means = (model.means_ - centre) @ matrix.T
        covs = np.einsum("ij,kjl,ml->kim", matrix, _full_covariances(model), matrix)
        _density_contours(ax, model.weights_, means, covs, points)
        # a variational mixture's unused components: greyed out, not coloured like clusters
        used = np.zeros(len(means), bool)
        used[model.effective_components() if hasattr(model, "effective_components")
             else slice(None)] = True
        for k, (mean, cov) in enumerate(zip(means, covs, strict=True)):
            if not (used[k] or show_empty):
                continue
            for sigma in (1, 2, 3):
                _ellipse(ax, mean, cov, sigma, cmap(k % cmap.N) if used[k] else EMPTY_COLOUR,
                         dashed=not used[k])
        ax.scatter(means[used, 0], means[used, 1], marker="+", s=120, c="black",
                   linewidths=1.5, label="component means")
        if not used.all() and show_empty:
            ax.scatter(means[~used, 0], means[~used, 1], marker="+", s=80, c=EMPTY_COLOUR,
                       linewidths=1, label=f"empty components ({(~used).sum()}: weight at most "
                                           f"{EMPTY_WEIGHT:.0%}), greyed out")
        elif not used.all():  # said, not drawn: they would clutter the middle
            ax.plot([], [], " ", label=f"{(~used).sum()} empty components hidden "
                                       "(--show-empty draws them)")
        # proxies, so that the legend says what the lines are
        ax.add_line(Line2D([], [], color="dimgray", lw=1.2,
                           label="ellipses: 1, 2, 3 \N{GREEK SMALL LETTER SIGMA} of each component "
                                 "(its colour)"))
        ax.add_line(Line2D([], [], color=CONTOUR_COLOUR, lw=0.8, ls="--",
                           label="dashed: mixture log-density, steps of 1.5"))
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
                          f"{len(X):,} sampled rows; {how}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fig


#: The density contours' colour, kept out of the clusters' palette.
CONTOUR_COLOUR = "0.35"
#: Components a variational mixture left (almost) empty: light grey, dashed.
EMPTY_COLOUR = "0.75"


def _cluster_colours(plt, n):
    """A qualitative palette without its greys (the contours are grey)."""
    from matplotlib.colors import ListedColormap, to_rgb

    base = plt.get_cmap("tab20" if n > 9 else "tab10").colors
    colours = [c for c in base if np.ptp(to_rgb(c)) > 0.05]  # drop the grey entries
    return ListedColormap(colours)


def _ellipse(ax, mean, cov, sigma, color, dashed=False):
    from matplotlib.patches import Ellipse

    values, vectors = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    width, height = 2 * sigma * np.sqrt(np.maximum(values[::-1], 0))
    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, color=color,
                         lw=2.0 / sigma, alpha=0.5 if dashed else 1.0, ls="--" if dashed else "-"))


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
    ax.contour(gx, gy, log_density, levels=np.linspace(top - 12, top, 9), colors=CONTOUR_COLOUR,
               linewidths=0.6, linestyles="dashed", alpha=0.7)


def edge_warning(ks, best_k) -> str | None:
    """A warning when the best k is the smallest or largest tried: the grid may be too narrow."""
    if len(ks) > 1 and best_k == max(ks):
        return f"the best k ({best_k}) is the largest tried: widen -k upwards"
    if len(ks) > 1 and best_k == min(ks) and best_k > 1:
        return f"the best k ({best_k}) is the smallest tried: widen -k downwards"
    return None


def _integer_ticks(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_selection(result, path):
    """BIC and AIC against k, every covariance type on one scale: the difference
    from the overall best candidate (all types, all k).

    Types can differ by far more than the changes along k, so the axis is
    symmetric-log; one shared zero keeps a type that is much worse from looking
    as good as the best (each type against its own best would). The chosen
    candidate is ringed at its own point on the panel of the criterion that chose it.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    kinds = list(dict.fromkeys(row["covariance_type"] for row in result.table))
    best = result.best_
    for ax, criterion in zip(axes, ("bic", "aic"), strict=True):
        overall = min(r[criterion] for r in result.table)
        for kind in kinds:
            rows = [r for r in result.table if r["covariance_type"] == kind]
            lowest = min(r[criterion] for r in rows)
            ax.plot([r["n_components"] for r in rows], [r[criterion] - overall for r in rows],
                    marker="o", label=f"{kind} (its best: +{lowest - overall:.4g})")
        if criterion == result.criterion:
            chosen = next(r for r in result.table if (r["n_components"], r["covariance_type"])
                          == (best.n_components, best.covariance_type))
            ax.scatter([chosen["n_components"]], [chosen[criterion] - overall], s=160,
                       facecolors="none", edgecolors="red", linewidths=2,
                       label=f"chosen: {best.n_components}, {best.covariance_type}", zorder=3)
        ax.set_yscale("symlog", linthresh=1.0)
        _integer_ticks(ax)
        ax.set_xlabel("number of components k")
        name = criterion.upper()
        ax.set_ylabel(f"\N{GREEK CAPITAL LETTER DELTA}{name} from the best of all "
                      f"({overall:.6g}), symlog")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ks = sorted({r["n_components"] for r in result.table})
    warning = edge_warning(ks, best.n_components)
    fig.suptitle(f"Model selection by {result.criterion.upper()} (lower is better): best "
                 f"{best.n_components} components, {best.covariance_type}"
                 + (f"\n{warning}" if warning else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fig


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
        _integer_ticks(ax)
        ax.grid(alpha=0.3)
    warning = edge_warning(ks, result.best_.n_clusters)
    fig.suptitle(f"k-means selection: highest silhouette at k={result.best_.n_clusters}"
                 + (f"\n{warning}" if warning else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


#: Scores below this quantile of the unflagged records' scores are drawn on the
#: axis floor, so that far anomalies (down to -1.8e308) do not squash the normal ones.
STREAM_FLOOR_QUANTILE = 0.5


def plot_stream(outputs, path, *, title=None, threshold=None):
    """A PNG of a scored stream (the JSON records ``streammix score`` writes): each
    record's score, the threshold, the anomalies, and the drift alarms.

    The threshold is the records' own when the scorer adapted (it moves), else
    ``threshold`` (a static run's records carry none: take the model's). The
    axis spans the unflagged records' scores from their ``STREAM_FLOOR_QUANTILE``
    percentile up, and the threshold; lower scores sit on the floor, counted in
    the legend. Returns the (closed) figure.
    """
    plt = _pyplot()
    scored = [o for o in outputs if isinstance(o.get("score"), int | float)]
    if not scored:
        raise ValueError("no scored records to plot (every record is an error or an event)")
    index = np.arange(1, len(scored) + 1)
    scores = np.array([o["score"] for o in scored], dtype=np.float64)
    anomaly = np.array([bool(o.get("anomaly")) for o in scored])
    moving = all("threshold" in o for o in scored)
    lines = np.array([o["threshold"] for o in scored], dtype=np.float64) if moving else (
        np.full(len(scored), float(threshold)) if threshold is not None else None)
    normal = scores[~anomaly] if (~anomaly).any() else scores
    low, high = np.percentile(normal, STREAM_FLOOR_QUANTILE), scores.max()
    if lines is not None:
        low, high = min(low, lines.min()), max(high, lines.max())
    span = max(high - low, 1e-9 * max(abs(high), 1.0))
    floor = low - 0.25 * span
    clipped = scores < floor
    shown = np.maximum(scores, floor)
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    ax.scatter(index[~anomaly], shown[~anomaly], s=2, c="tab:blue", alpha=0.4, linewidths=0,
               label="score (log-density)")
    ax.scatter(index[anomaly], shown[anomaly], s=8, c="red", marker="x", linewidths=0.8,
               label=f"flagged ({anomaly.sum():,} of {len(scored):,})")
    if lines is not None:
        ax.plot(index, lines, c="black", lw=1,
                label="threshold" + ("" if moving else f" {lines[0]:.6g} (static)"))
    if clipped.any():
        ax.axhline(floor, c="0.5", lw=0.8, ls=":",
                   label=f"{clipped.sum():,} scores below {floor:.4g} drawn on this floor")
    for k, event in enumerate(o for o in outputs if o.get("event") == "drift"):
        ax.axvline(event.get("record", 0), c="darkorange", lw=1.2, ls="--",
                   label="drift alarm" if k == 0 else None)
    ax.set_ylim(floor - 0.02 * span, high + 0.05 * span)
    ax.set_xlabel("record")
    ax.set_ylabel("score (higher is more normal)")
    ax.set_title(title or f"scored stream: {len(scored):,} records", fontsize=10)
    ax.legend(loc="lower left", fontsize=8, markerscale=2)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fig
