"""``fit``, ``select`` and ``calibrate``: models from data."""

from __future__ import annotations

import contextlib
import re
import sys
import time

import click
import numpy as np

from ..core.bayesian import PRIOR_TYPES
from ..describe import describe
from ..estimators import (
    BayesianGaussianMixture,
    GaussianMixture,
    KMeans,
    MiniBatchKMeans,
    select,
    select_kmeans,
)
from ..estimators.selection import SCREEN_SIZE, SILHOUETTE_SAMPLE
from ..scoring import AnomalyScorer
from ..scoring.configure import DEFAULT_CONTAMINATION
from .app import main, quiet_cluster_logs
from .options import (
    CONTAMINATION,
    CovarianceTypes,
    FloatList,
    IntegerList,
    OutputPath,
    cluster_options,
    data_options,
    given_storage_options,
    load_model,
    open_source,
    refuse_unused,
    say,
    verbosity,
    verbosity_options,
    weight_option,
)

MODELS = {"gmm": GaussianMixture, "bayesian-gmm": BayesianGaussianMixture, "kmeans": KMeans,
          "minibatch-kmeans": MiniBatchKMeans}
MIXTURES = ("gmm", "bayesian-gmm")


# -- fit -------------------------------------------------------------------------------
@main.command()
@click.argument("data")
@click.option("-o", "--output", required=True, type=OutputPath(urls=True),
              help="Model file to write (.npz; a path or an s3://, gs://, az:// URL).")
@click.option("--model", "kind", default="gmm", show_default=True, type=click.Choice(MODELS))
@click.option("-k", "--n-components", "k", default=8, show_default=True, type=click.IntRange(1),
              help="Components (gmm) or clusters (k-means).")
@click.option("--covariance-type", default="full", type=CovarianceTypes(single=True),
              help="One of full, tied, diag, spherical (gmm).")
@click.option("--init", help="gmm: kmeans, k-means++, random, random_from_data; "
                             "k-means: auto, k-means++, k-means||, random.")
@click.option("--n-init", type=click.IntRange(1), help="Initialisations (restarts).")
@click.option("--max-iter", type=click.IntRange(1), help="Iterations (gmm, kmeans) or epochs.")
@click.option("--tol", type=click.FloatRange(0), help="Convergence tolerance.")
@click.option("--reg-covar", type=click.FloatRange(0), help="gmm: added to the variances.")
@click.option("--batch-size", type=click.IntRange(1), help="minibatch-kmeans: rows per batch.")
@click.option("--seed", type=int, help="Random seed (random_state).")
@click.option("--checkpoint", type=OutputPath("dir", urls=True),
              help="Checkpoint directory: resume a killed fit from its last iteration.")
@click.option("--restart", is_flag=True, help="Discard what --checkpoint holds; start afresh.")
@click.option("--contamination", type=CONTAMINATION,
              help="Also calibrate the anomaly threshold: flag this fraction of DATA "
                   "(of the held-out rows with --calibration-fraction).")
@click.option("--calibration-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Hold out this share of DATA's rows (a split seeded by --seed): the model "
                   "never sees them, the threshold is calibrated on them (at --contamination, "
                   f"default {DEFAULT_CONTAMINATION}). Flags about that share of new normal "
                   "records, where calibrating on the training rows flags more.")
@click.option("--weight-prior-type", type=click.Choice(PRIOR_TYPES),
              help="bayesian-gmm: the weights' prior [default: dirichlet_process].")
@click.option("--weight-concentration-prior", type=click.FloatRange(0, min_open=True),
              help="bayesian-gmm: its concentration; smaller leaves fewer components "
                   "[default: 1/k].")
@click.option("--mean-precision-prior", type=click.FloatRange(0, min_open=True),
              help="bayesian-gmm: precision of the means' prior [default: 1].")
@click.option("--mean-prior", type=FloatList(),
              help="bayesian-gmm: the means' prior, one value per feature, comma-separated "
                   "[default: the data's mean].")
@click.option("--degrees-of-freedom-prior", type=float,
              help="bayesian-gmm: of the precisions' Wishart prior, > features - 1 "
                   "[default: the number of features].")
@click.option("--covariance-prior", type=click.FloatRange(0, min_open=True),
              help="bayesian-gmm: a variance v; the prior is v times the identity "
                   "[default: the data's covariance].")
@data_options
@weight_option
@cluster_options
@verbosity_options
def fit(data, output, kind, k, covariance_type, init, n_init, max_iter, tol, reg_covar,
        batch_size, seed, checkpoint, restart, contamination, calibration_fraction,
        weight_prior_type,
        weight_concentration_prior, mean_precision_prior, mean_prior, degrees_of_freedom_prior,
        covariance_prior, columns, exclude_columns, id_field, chunk_size, dtype, weight_column,
        scheduler, workers, verbose, quiet):
    """Fit a model on DATA (Parquet file, folder or glob; Zarr store), out-of-core.

    \b
    Examples:
      streammix fit data/ -k 5 --covariance-type diag -o model.npz
      streammix fit data/ --model kmeans -k 20 -o kmeans.npz
      streammix fit data/ -k 5 --checkpoint ckpt/ -o model.npz        # resumable
      streammix fit data/ -k 5 --scheduler tcp://10.0.0.5:8786 -o model.npz
      streammix fit data/ --model kmeans -k 8 --weight-column count -o kmeans.npz
      streammix fit data/ --model bayesian-gmm -k 20 -o bgm.npz   # the data picks k
      streammix fit data/ -k 5 --contamination 0.01 --calibration-fraction 0.2 -o model.npz
    """
    level = verbosity(verbose, quiet)
    quiet_cluster_logs(scheduler)
    choice = {"columns": columns, "chunk_size": chunk_size, "dtype": dtype,
              "exclude_columns": exclude_columns, "id_field": id_field}
    source = open_source(data, weight_column=weight_column, **choice)
    params = {"random_state": seed, "checkpoint": checkpoint, "restart": restart,
              "scheduler": scheduler, "n_workers": workers, "verbose": level, "dtype": dtype,
              "storage_options": given_storage_options(),
              "chunk_size": chunk_size}
    optional = {"n_init": n_init, "max_iter": max_iter, "tol": tol}
    priors = {"weight_concentration_prior_type": weight_prior_type,
              "weight_concentration_prior": weight_concentration_prior,
              "mean_precision_prior": mean_precision_prior,
              "mean_prior": None if mean_prior is None else np.asarray(mean_prior),
              "degrees_of_freedom_prior": degrees_of_freedom_prior,
              "covariance_prior": _covariance_prior(covariance_prior, covariance_type,
                                                    source.n_features)}
    if kind != "bayesian-gmm" and any(v is not None for v in priors.values()):
        raise click.UsageError("the prior options are for --model bayesian-gmm")
    if kind in MIXTURES:
        optional.update(init_params=init, reg_covar=reg_covar)
        if kind == "bayesian-gmm":
            optional.update(priors)
        model = MODELS[kind](k, covariance_type=covariance_type, verbose_interval=1,
                             **params, **{n: v for n, v in optional.items() if v is not None})
    else:
        optional.update(init=init, batch_size=batch_size if kind == "minibatch-kmeans" else None)
        model = MODELS[kind](k, **params, **{n: v for n, v in optional.items() if v is not None})
    if calibration_fraction is not None and checkpoint and seed is None:
        raise click.UsageError("--calibration-fraction with --checkpoint needs --seed: the "
                               "held-out rows are drawn from it, and a resumed fit must hold "
                               "out the same ones")
    _warn_label_like(source)  # before the fit: a long one can be stopped at once
    began = time.perf_counter()
    held_out = None
    with contextlib.redirect_stdout(sys.stderr):  # the estimators' verbose lines: not data
        if calibration_fraction is not None:  # fit on the kept rows, calibrate on the others
            held_out = AnomalyScorer(model, contamination=contamination or DEFAULT_CONTAMINATION,
                                     calibration="holdout", holdout_fraction=calibration_fraction,
                                     random_state=seed).fit(source)
            model = held_out.model_
        else:
            model.fit(source)
    bound = getattr(model, "lower_bound_", None)
    if kind == "bayesian-gmm":  # a sum over the rows fitted (not the held-out ones): per row
        bound = describe(model)["lower_bound_per_row"]
    summary = (f"lower bound {bound:.6f} per row, converged={model.converged_}"
               if kind in MIXTURES else f"inertia {model.inertia_:.6g}")
    if kind == "bayesian-gmm":
        summary += f", {len(model.effective_components())} effective components"
    if held_out is not None:
        held_out.save(output)
        summary += (f", anomaly threshold {held_out.offset_:.6g} (calibrated on a held-out "
                    f"{calibration_fraction:.0%} of the rows)")
    elif contamination is not None:  # a quantile of the rows, not of their weights
        unweighted = source if weight_column is None else open_source(data, **choice)
        scorer = AnomalyScorer(model, contamination=contamination).fit(unweighted)
        scorer.save(output)
        summary += f", anomaly threshold {scorer.offset_:.6g}"
    else:
        model.save(output)
    held = "" if held_out is None else f" less the {calibration_fraction:.0%} held out"
    say(f"fitted {type(model).__name__}(k={k}) on {source.n_rows:,} rows{held} x "
         f"{_features(source)} in {time.perf_counter() - began:.1f} s: "
         f"{model.n_iter_} iterations, {summary}; wrote {output}", quiet)


def _covariance_prior(variance, covariance_type, n_features):
    """``--covariance-prior v`` in the prior's shape for the covariance type: v I."""
    if variance is None:
        return None
    if covariance_type in ("full", "tied"):
        return variance * np.eye(n_features)
    return np.full(n_features, variance) if covariance_type == "diag" else variance


def _features(source) -> str:
    """``3 features (a, b, c)``: every column a fit used, numbered runs compacted
    (``x0..x15``), so that a column that should not be there shows."""
    names = list(source.feature_names or [])
    return f"{source.n_features} features" + (f" ({compact_names(names)})" if names else "")


def compact_names(names) -> str:
    """The names, comma-separated, with runs of 3 or more numbered alike (``x0, x1, x2``)
    written as one range (``x0..x2``).

    >>> compact_names(["x0", "x1", "x2", "x3", "label", "f9", "f10"])
    'x0..x3, label, f9, f10'
    """
    parsed = [re.fullmatch(r"(.*?)(\d+)", name) for name in names]
    parts, i = [], 0
    while i < len(names):
        j = i + 1
        if parsed[i]:
            prefix, number = parsed[i].group(1), int(parsed[i].group(2))
            while (j < len(names) and parsed[j] and parsed[j].group(1) == prefix
                   and parsed[j].group(2) == str(number + j - i)):
                j += 1
        parts.append(f"{names[i]}..{names[j - 1]}" if j - i >= 3 else ", ".join(names[i:j]))
        i = j
    return ", ".join(parts)


#: Column names that usually hold the answer rather than a measurement.
LABEL_NAMES = frozenset({"label", "labels", "target", "class", "y"})
#: An integer column with at most this many distinct values in the first rows (of at
#: least LABEL_MIN_ROWS) looks like a label or a category.
LABEL_MAX_VALUES, LABEL_MIN_ROWS = 10, 100


def label_like_columns(source) -> dict[str, str]:
    """The columns that look like a label (a forgotten ``label`` or ``target``), and why:
    by name, or integer-valued with few distinct values in the first chunk's rows."""
    names = list(source.feature_names or [f"x{j}" for j in range(source.n_features)])
    found = {name: "its name" for name in names if name.strip().lower() in LABEL_NAMES}
    try:
        block = _first_rows(source)
    except Exception:  # a hint only: the fit reports bad data itself
        return found
    if block.shape[0] < LABEL_MIN_ROWS:
        return found
    for j, name in enumerate(names):
        column = block[:, j]
        if name in found or not np.all(np.isfinite(column)) or \
                not np.array_equal(column, np.round(column)):
            continue
        distinct = len(np.unique(column))
        if 1 < distinct <= LABEL_MAX_VALUES:
            found[name] = f"{distinct} distinct integer values"
    return found


def _first_rows(source) -> np.ndarray:
    """The first block of the first chunk (one read, on this machine)."""
    chunk = source.plan()[0]
    task = source.dask_input(chunk)
    if task is not None:  # a chunk that is itself a Dask task (a Dask collection's block)
        import dask

        task = dask.compute(task, scheduler="sync")[0]
    payload = task
    return next(iter(source.read_chunk(chunk, payload)))[1]


def _warn_label_like(source):
    for name, why in label_like_columns(source).items():
        click.echo(f"Warning: column {name!r} looks like a label ({why}) and is fitted as a "
                   f"feature; if it is one, leave it out: --exclude-columns {name}", err=True)



# -- select ----------------------------------------------------------------------------
@main.command(name="select")
@click.argument("data")
@click.option("-k", "--n-components", "ks", default="1..10", show_default=True,
              type=IntegerList(), help="Candidates: 1..10 (both ends included; 10..1 is the "
                                       "same), 2,4,8 or 3.")
@click.option("--covariance-type", "kinds", default="full,tied,diag,spherical",
              type=CovarianceTypes(), help="Comma-separated: full, tied, diag, spherical (gmm).")
@click.option("--criterion", default="bic", type=click.Choice(["bic", "aic"]),
              help="gmm: the criterion that picks the best candidate (lowest wins).")
@click.option("--model", "kind", default="gmm", type=click.Choice(["gmm", "kmeans"]),
              help="Gaussian mixtures (BIC/AIC) or k-means (inertia and silhouette).")
@click.option("-o", "--output", required=True, type=OutputPath(urls=True),
              help="Write the best model here (a path or a URL).")
@click.option("--plot", "plot_path", type=OutputPath(), help="PNG of the criterion curves.")
@click.option("--max-iter", type=click.IntRange(1),
              help="Iterations per candidate (default: the estimator's, 100 gmm, 300 kmeans).")
@click.option("--n-init", type=click.IntRange(1),
              help="Starts per candidate; the best is kept (default: 10 gmm, the estimator's "
                   "for kmeans).")
@click.option("--screen-size", default=SCREEN_SIZE, show_default=True, type=click.IntRange(0),
              help="gmm: on more rows than this, screen the starts on a seeded sample of this "
                   "many rows and fit only each candidate's best on all rows (0: every start "
                   "on all rows).")
@click.option("--allow-overparameterized", is_flag=True,
              help="gmm: also fit candidates with more free parameters than rows (left out, "
                   "with a warning, by default).")
@click.option("--sample-size", default=SILHOUETTE_SAMPLE, type=click.IntRange(10),
              help="kmeans: rows of the silhouette sample.")
@click.option("--seed", type=int, help="Random seed (random_state): each candidate equals "
                                       "'streammix fit' with the same seed.")
@click.option("--checkpoint", type=OutputPath("dir", urls=True),
              help="Checkpoint directory: resume a killed selection from its last iteration.")
@click.option("--restart", is_flag=True, help="Discard what --checkpoint holds; start afresh.")
@data_options
@cluster_options
@weight_option
@verbosity_options
def select_command(data, ks, kinds, criterion, kind, output, plot_path, max_iter, n_init,
                   screen_size, allow_overparameterized, sample_size, seed, checkpoint, restart,
                   columns, exclude_columns, id_field, chunk_size, dtype, scheduler, workers,
                   weight_column, verbose, quiet):
    """Fit every candidate of a grid, sharing the data passes, and keep the best.

    For Gaussian mixtures: BIC and AIC of every (k, covariance type); the
    lowest --criterion wins. Each candidate gets --n-init starts (screened on
    a sample of --screen-size rows when DATA has more) and keeps its best; a
    warning says when the best lies on the grid's edge, or when candidates
    with more free parameters than rows were left out. The starts cost time
    on small data (about --n-init times one start; --n-init 1 is faster and
    less reliable); on large data most of the work is on the sample. The
    table's last line gives the time taken. For k-means (--model
    kmeans): inertia (the elbow) and the silhouette on a seeded sample; the
    highest silhouette wins.

    \b
    Examples:
      streammix select data/ -k 1..10 --covariance-type full,diag -o best.npz --plot bic.png
      streammix select data/ --model kmeans -k 2..12 -o best.npz --plot elbow.png
    """
    from .. import plotting  # matplotlib: only when needed

    gmm = kind == "gmm"
    refuse_unused(click.get_current_context(), [
        *((name, gmm, "to --model gmm") for name in (
            "kinds", "criterion", "screen_size", "allow_overparameterized")),
        ("sample_size", not gmm, "to --model kmeans (the silhouette's sample)")])
    quiet_cluster_logs(scheduler)
    source = open_source(data, columns, chunk_size, dtype, weight_column, exclude_columns, id_field)
    params = {"random_state": seed, "checkpoint": checkpoint, "restart": restart,
              "scheduler": scheduler, "n_workers": workers, "chunk_size": chunk_size,
              "dtype": dtype, "verbose": verbosity(verbose, quiet),
              "storage_options": given_storage_options()}
    params.update({n: v for n, v in {"max_iter": max_iter, "n_init": n_init}.items()
                   if v is not None})
    if kind == "gmm":
        # select() itself warns (SelectionWarning, one line here) about the grid's edge
        result = select(source, n_components=ks, covariance_types=kinds, criterion=criterion,
                        screen_size=screen_size or None,
                        allow_overparameterized=allow_overparameterized, **params)
        draw = plotting.plot_selection
    else:
        result = select_kmeans(source, n_clusters=ks, sample_size=sample_size,
                               **params)
        draw = plotting.plot_kmeans_selection
    click.echo(str(result))
    if kind != "gmm":
        edge = plotting.edge_warning(sorted(set(ks)), result.best_.n_clusters)
        if edge:
            click.echo(f"Warning: {edge}", err=True)
    result.best_.save(output)
    if plot_path:
        draw(result, plot_path)
    say(f"best: {_named(result.best_)}; wrote {output}"
        + (f" and {plot_path}" if plot_path else ""), quiet)


def _named(model) -> str:
    """The chosen model in a few words: its start's arrays belong in the file, not here."""
    best = model.get_params()
    shown = {name: best[name] for name in ("n_components", "n_clusters", "covariance_type")
             if name in best}
    return f"{type(model).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"



# -- anomaly scoring --------------------------------------------------------------------------
@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option("--contamination", default=DEFAULT_CONTAMINATION, show_default=True,
              type=CONTAMINATION,
              help="Fraction of DATA to put below the threshold.")
@click.option("-o", "--output", type=OutputPath(urls=True),
              help="Write the calibrated model here (default: MODEL).")
@cluster_options
@verbosity_options
def calibrate(model_path, data, contamination, output, scheduler, workers, verbose, quiet):
    """Calibrate MODEL's anomaly threshold on DATA and save it with the model.

    \b
    Example:
      streammix calibrate model.npz data/ --contamination 0.01
    """
    model = load_model(model_path, scheduler, workers, verbosity(verbose, quiet))
    scorer = AnomalyScorer(model, contamination=contamination).fit(data)
    scorer.save(output or model_path)
    say(f"threshold {scorer.offset_:.6g} (flags {contamination:.2%} of {data}); wrote "
         f"{output or model_path}", quiet)


