"""The ``streammix`` command line: a thin shell over the estimators.

User errors (bad data, a missing file, a bad model file, bad parameters) exit
with code 2 and one line on stderr; ``--debug`` shows the traceback instead.
Progress (a bar per data pass, a line per iteration) goes to stderr when it is
a terminal, or with ``-v``; ``-q`` silences it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings

import click
import numpy as np

from .core.bayesian import PRIOR_TYPES
from .core.gaussian import COVARIANCE_TYPES
from .describe import describe, feature_names
from .estimators import (
    AnomalyScorer,
    BayesianGaussianMixture,
    GaussianMixture,
    KMeans,
    MiniBatchKMeans,
    load,
    select,
    select_kmeans,
)
from .exceptions import ConvergenceWarning, StreammixError
from .io.storage import is_url

MODELS = {"gmm": GaussianMixture, "bayesian-gmm": BayesianGaussianMixture, "kmeans": KMeans,
          "minibatch-kmeans": MiniBatchKMeans}
MIXTURES = ("gmm", "bayesian-gmm")


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


def _quiet_cluster_logs(scheduler):
    """With a scheduler, distributed's own logs (reconnection attempts, tracebacks) stay
    silent: streammix reports what went wrong in one line. ``--debug`` shows them."""
    if scheduler is None or click.get_current_context().find_root().params.get("debug"):
        return
    import distributed  # noqa: F401 -- its logging configuration is applied on import

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


class _Group(click.Group):
    """Turns user errors into ``Error: ...`` and exit code 2, unless ``--debug``.

    Bad options too are one line (click's own usage block names the option as
    well, in four). Warnings are one ``Warning: ...`` line each; a closed
    stdout (``| head``) ends the command quietly.
    """

    def invoke(self, ctx):
        debug = ctx.params.get("debug")
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return super().invoke(ctx)
        except click.UsageError as exc:
            if debug:
                raise
            command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"Error: {' '.join(exc.format_message().split())} "
                       f"(see: {command} --help)", err=True)
            ctx.exit(2)
        except BrokenPipeError:
            # The reader went away: stop quietly, as command-line tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except (StreammixError, ValueError, OSError, TypeError) as exc:
            if debug:
                raise
            click.echo(f"Error: {' '.join(str(exc).split())}", err=True)  # one line
            ctx.exit(2)


class CovarianceTypes(click.ParamType):
    """Covariance types, comma-separated (``full,diag``); ``single`` takes exactly one."""

    name = "types"

    def __init__(self, single=False):
        self.single = single

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        kinds = [part.strip() for part in str(value).split(",") if part.strip()]
        unknown = [kind for kind in kinds if kind not in COVARIANCE_TYPES]
        if unknown or not kinds or (self.single and len(kinds) != 1):
            expected = "one" if self.single else "comma-separated"
            self.fail(f"expected {expected} of {', '.join(COVARIANCE_TYPES)}, got {value!r}",
                      param, ctx)
        return kinds[0] if self.single else list(dict.fromkeys(kinds))


class OutputPath(click.ParamType):
    """A path to write: checked when the command line is read, before any work.

    ``kind="file"``: its folder must exist and be writable, and it must not be
    a folder. ``kind="dir"``: a writable folder, or one that can be made in an
    existing writable folder. ``kind="either"``: one or the other. Errors name
    the path as the user gave it.
    """

    name = "path"

    def __init__(self, kind="file", *, urls=False):
        self.kind = kind
        self.urls = urls

    def convert(self, value, param, ctx):
        path = os.fspath(value)
        if is_url(path):
            if not self.urls:
                self.fail(f"{path}: this output is written on this machine; give a local "
                          "or shared path", param, ctx)
            return path  # a URL: the store says at the write (no folders to check)
        parent = os.path.dirname(os.path.abspath(path))
        if self.kind != "file" and os.path.isdir(path):
            if not os.access(path, os.W_OK):
                self.fail(f"{path}: the folder is not writable", param, ctx)
            return path
        if self.kind == "file" and os.path.isdir(path):
            self.fail(f"{path} is a folder; give a file name", param, ctx)
        if self.kind == "dir" and os.path.exists(path):
            self.fail(f"{path} is a file; give a folder", param, ctx)
        if not os.path.isdir(parent):
            self.fail(f"{path}: the folder {os.path.dirname(path) or '.'} does not exist",
                      param, ctx)
        if not os.access(parent, os.W_OK):
            self.fail(f"{path}: the folder {os.path.dirname(path) or '.'} is not writable",
                      param, ctx)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            self.fail(f"{path} exists and is not writable", param, ctx)
        return path


@click.group(cls=_Group, context_settings={"show_default": True})
@click.option("--debug", is_flag=True,
              help="Show tracebacks of errors (give it before the command: "
                   "streammix --debug fit ...).")
@click.version_option(package_name="streammix")
def main(debug):
    """Cluster data larger than memory and score streams for anomalies.

    \b
    A tour:
      streammix make-data data/ --rows 1000000 --components 5
      streammix fit data/ -k 5 -o model.npz --contamination 0.01
      streammix select data/ -k 1..8 --covariance-type full,diag -o best.npz --plot bic.png
      streammix plot model.npz data/ -o clusters.png
      streammix score model.npz - < events.jsonl
    """


# -- shared options ----------------------------------------------------------------
def verbosity_options(command):
    command = click.option("-q", "--quiet", is_flag=True, help="No progress output.")(command)
    return click.option("-v", "--verbose", count=True,
                        help="Progress even when stderr is not a terminal (-vv: more).")(command)


def data_options(command):
    command = click.option("--dtype", type=click.Choice(["float64", "float32"]),
                           help="Working dtype of the arithmetic (default: float32 when every "
                                "column is float32, else float64).")(command)
    command = click.option("--chunk-size", type=click.IntRange(1),
                           help="Rows per chunk (default: about 8 MiB).")(command)
    command = click.option("--id-field", default="id", show_default=True,
                           help="Left out of the features when DATA has it: the id column "
                                "that predict and score pass through.")(command)
    command = click.option("--exclude-columns",
                           help="Comma-separated columns that are not features (Parquet).")(
        command)
    return click.option("--columns", help="Comma-separated columns to use (Parquet; default: "
                                          "all numeric columns but --exclude-columns and "
                                          "--id-field).")(command)


def _storage_options(ctx, param, values):
    """``KEY=VALUE`` pairs as fsspec storage options (JSON values are parsed: true, 3, {...})."""
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {key.strip()!r}=...")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    ctx.meta["storage_options"] = options or None
    return None


def storage_option(command):
    return click.option(
        "--storage-option", multiple=True, expose_value=False, callback=_storage_options,
        help="KEY=VALUE option of the object store of s3://, gs://, az:// ... URLs "
             "(repeatable; JSON values parsed). Credentials are best left to the store's "
             "usual chain (environment, profile, instance role).")(command)


def cluster_options(command):
    command = storage_option(command)
    command = click.option("--workers", type=click.IntRange(1),
                           help="Threads of the in-process scheduler.")(command)
    return click.option("--scheduler",
                        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786.")(command)


def _verbosity(verbose, quiet) -> int:
    if quiet:
        warnings.simplefilter("ignore", ConvergenceWarning)
        return 0
    return verbose or int(sys.stderr.isatty())


def _load(model_path, scheduler=None, workers=None, level=0):
    """The model of ``model_path``, set to compute where this command says (never the file)."""
    model = load(model_path, _given_storage_options())
    model.set_params(scheduler=scheduler, n_workers=workers, verbose=level,
                     storage_options=_given_storage_options())
    _quiet_cluster_logs(scheduler)
    return model


def _given_storage_options():
    """The command's --storage-option pairs, or None."""
    return click.get_current_context().meta.get("storage_options")


def _names(text) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _source(data, columns=None, chunk_size=None, dtype=None, weight_column=None,
            exclude_columns=None, id_field=None):
    """DATA as a source. Parquet: features are --columns, or all columns but the
    excluded ones, the weight column and the id field (when DATA has one)."""
    from .io import _is_zarr_path, as_source, read_parquet
    from .io.parquet import ParquetSource, expand_paths, storage_for

    names, excluded = _names(columns), _names(exclude_columns) or []
    storage_options = _given_storage_options()
    if _is_zarr_path(data):
        if weight_column or excluded:
            raise click.UsageError("--weight-column and --exclude-columns name Parquet "
                                   "columns; Zarr data has none")
        return as_source(data, chunk_size=chunk_size, dtype=dtype,
                         storage_options=storage_options)
    if id_field and not names and id_field not in excluded:
        # the first file's footer says whether the data has an id column
        storage = storage_for(data, storage_options)
        if id_field in ParquetSource.inspect(expand_paths(data, storage)[0], storage)[1].names:
            excluded.append(id_field)
    return read_parquet(data, names, exclude_columns=excluded, chunk_size=chunk_size,
                        dtype=dtype, weight_column=weight_column, storage_options=storage_options)


def weight_option(command):
    return click.option("--weight-column",
                        help="Parquet column of per-row weights (sample_weight); not a "
                             "feature.")(command)


class FloatList(click.ParamType):
    """``"0.5,1,-2"``: comma-separated finite numbers."""

    name = "numbers"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            values = [float(part) for part in str(value).split(",")]
        except ValueError:
            values = []
        if not values or not np.isfinite(values).all():
            self.fail(f"expected comma-separated numbers such as 0.5,1,-2, got {value!r}",
                      param, ctx)
        return values


class IntegerList(click.ParamType):
    """``"1..10"`` (both ends included), ``"2,4,8"``, ``"3"`` or a mix: positive integers."""

    name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        values = []
        try:
            for part in str(value).split(","):
                if ".." in part:
                    low, high = part.split("..")
                    values.extend(range(int(low), int(high) + 1))
                elif part.strip():
                    values.append(int(part))
        except ValueError:
            values = []
        if not values or min(values) < 1:
            self.fail(f"expected positive integers such as 3, 2,4,8 or 1..10 (both ends "
                      f"included), got {value!r}", param, ctx)
        return values


def _say(message, quiet=False):
    """A result line on stderr (stdout stays for data), unless --quiet."""
    if not quiet:
        click.echo(message, err=True)


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
@click.option("--contamination", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="Also calibrate the anomaly threshold: flag this fraction of DATA.")
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
        batch_size, seed, checkpoint, restart, contamination, weight_prior_type,
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
    """
    level = _verbosity(verbose, quiet)
    _quiet_cluster_logs(scheduler)
    choice = {"columns": columns, "chunk_size": chunk_size, "dtype": dtype,
              "exclude_columns": exclude_columns, "id_field": id_field}
    source = _source(data, weight_column=weight_column, **choice)
    params = {"random_state": seed, "checkpoint": checkpoint, "restart": restart,
              "scheduler": scheduler, "n_workers": workers, "verbose": level, "dtype": dtype,
              "storage_options": _given_storage_options(),
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
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the estimators' verbose lines: not data
        model.fit(source)
    summary = (f"lower bound {model.lower_bound_:.6f}, converged={model.converged_}"
               if kind in MIXTURES else f"inertia {model.inertia_:.6g}")
    if kind == "bayesian-gmm":
        summary += f", {len(model.effective_components())} effective components"
    if contamination is not None:  # a quantile of the rows, not of their weights
        unweighted = source if weight_column is None else _source(data, **choice)
        scorer = AnomalyScorer(model, contamination=contamination).fit(unweighted)
        scorer.save(output)
        summary += f", anomaly threshold {scorer.offset_:.6g}"
    else:
        model.save(output)
    _say(f"fitted {type(model).__name__}(k={k}) on {source.n_rows:,} rows x "
         f"{_features(source)} in {time.perf_counter() - began:.1f} s: "
         f"{model.n_iter_} iterations, {summary}; wrote {output}", quiet)


def _covariance_prior(variance, covariance_type, n_features):
    """``--covariance-prior v`` in the prior's shape for the covariance type: v I."""
    if variance is None:
        return None
    if covariance_type in ("full", "tied"):
        return variance * np.eye(n_features)
    return np.full(n_features, variance) if covariance_type == "diag" else variance


def _features(source, shown=8) -> str:
    """``3 features (a, b, c)``: which columns a fit used (the first few of many)."""
    names = list(source.feature_names or [])
    listed = ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)"
                                         if len(names) > shown else "")
    return f"{source.n_features} features" + (f" ({listed})" if names else "")


# -- predict ---------------------------------------------------------------------------
@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option("-o", "--output", required=True, type=OutputPath("either", urls=True),
              help="Parquet file to write; or a folder or URL prefix (s3://bucket/out/): "
                   "one part per chunk, written by the workers, then committed.")
@click.option("--proba", is_flag=True, help="Also each component's probability (gmm).")
@click.option("--id-field", default="id", show_default=True,
              help="Column passed through to the output when DATA has it.")
@cluster_options
@verbosity_options
def predict(model_path, data, output, proba, id_field, scheduler, workers, verbose, quiet):
    """Write the cluster of every row of DATA (and probabilities) to Parquet.

    \b
    Example:
      streammix predict model.npz data/ -o labels.parquet --proba
      streammix predict model.npz s3://bucket/data/ -o s3://bucket/labels/
    """
    from .scoring import predict_to_parquet

    model = _load(model_path, scheduler, workers, _verbosity(verbose, quiet))
    rows = predict_to_parquet(model, data, output, proba=proba, id_field=id_field)
    _say(f"{rows:,} rows; wrote {output}", quiet)


# -- select ----------------------------------------------------------------------------
@main.command(name="select")
@click.argument("data")
@click.option("-k", "--n-components", "ks", default="1..10", show_default=True,
              type=IntegerList(), help="Candidates: 1..10 (both ends included), 2,4,8 or 3.")
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
              help="Initialisations per candidate (default: the estimator's).")
@click.option("--sample-size", default=2000, type=click.IntRange(10),
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
                   sample_size, seed, checkpoint, restart, columns, exclude_columns, id_field,
                   chunk_size, dtype, scheduler, workers, weight_column, verbose, quiet):
    """Fit every candidate of a grid, sharing the data passes, and keep the best.

    For Gaussian mixtures: BIC and AIC of every (k, covariance type); the
    lowest --criterion wins. For k-means (--model kmeans): inertia (the elbow)
    and the silhouette on a seeded sample; the highest silhouette wins.

    \b
    Examples:
      streammix select data/ -k 1..10 --covariance-type full,diag -o best.npz --plot bic.png
      streammix select data/ --model kmeans -k 2..12 -o best.npz --plot elbow.png
    """
    from . import plotting

    _quiet_cluster_logs(scheduler)
    source = _source(data, columns, chunk_size, dtype, weight_column, exclude_columns, id_field)
    params = {"random_state": seed, "checkpoint": checkpoint, "restart": restart,
              "scheduler": scheduler, "n_workers": workers, "chunk_size": chunk_size,
              "dtype": dtype, "verbose": _verbosity(verbose, quiet),
              "storage_options": _given_storage_options()}
    params.update({n: v for n, v in {"max_iter": max_iter, "n_init": n_init}.items()
                   if v is not None})
    if kind == "gmm":
        result = select(source, n_components=ks,
                        covariance_types=kinds,
                        criterion=criterion, **params)
        draw = plotting.plot_selection
    else:
        result = select_kmeans(source, n_clusters=ks, sample_size=sample_size,
                               **params)
        draw = plotting.plot_kmeans_selection
    click.echo(str(result))
    best_k = getattr(result.best_, "n_components", getattr(result.best_, "n_clusters", None))
    edge = plotting.edge_warning(sorted(set(ks)), best_k)
    if edge:
        click.echo(f"Warning: {edge}", err=True)
    result.best_.save(output)
    if plot_path:
        draw(result, plot_path)
    _say(f"best: {result.best_!r}; wrote {output}" + (f" and {plot_path}" if plot_path else ""),
         quiet)


# -- sample, info, plot, make-data ----------------------------------------------------------
@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option("-n", "--n-samples", required=True, type=click.IntRange(1))
@click.option("-o", "--output", required=True, type=OutputPath(),
              help="Parquet file to write.")
@click.option("--seed", type=int, help="Random seed (default: the model's).")
@verbosity_options
def sample(model_path, n_samples, output, seed, verbose, quiet):
    """Draw rows from a Gaussian mixture model into Parquet (features and component).

    \b
    Example:
      streammix sample model.npz -n 100000 -o synthetic.parquet
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ._atomic import atomic_write
    from .io.parquet import WRITE_OPTIONS

    model = load(model_path)
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"{model_path}: sampling needs a Gaussian mixture model")
    if seed is not None:
        model.random_state = seed
    X, y = model.sample(n_samples)
    names = feature_names(model)
    with atomic_write(output) as handle:
        pq.write_table(pa.table({**{n: X[:, j] for j, n in enumerate(names)}, "component": y}),
                       handle, **WRITE_OPTIONS)
    _say(f"{n_samples:,} rows; wrote {output}", quiet)


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@storage_option
def info(model_path, as_json):
    """Describe a saved model: type, parameters, features, k, weights, convergence, threshold.

    \b
    Example:
      streammix info model.npz --json
    """
    info = describe(load(model_path, _given_storage_options()))
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    kind = info["params"].get("covariance_type")
    click.echo(f"{info['model']}: {info['n_components']} "
               f"{'components (' + kind + ')' if kind else 'clusters'}, "
               f"{info['n_features']} features")
    click.echo(f"features: {', '.join(info['feature_names'])}")
    if "lower_bound" in info:
        click.echo(f"converged: {info['converged']} after {info['n_iter']} iterations, "
                   f"lower bound {info['lower_bound']:.6f}")
    else:
        click.echo(f"{info['n_iter']} iterations, inertia {info['inertia']:.6g}")
    effective = info.get("effective_components")
    if effective is not None:
        click.echo(f"effective components: {len(effective)} of {info['n_components']} "
                   f"(weight above {info['effective_weight']:.0%}): "
                   f"{', '.join(map(str, effective)) or 'none'}")
    if info["anomaly_threshold"] is not None:
        how = info["anomaly_contamination"]
        click.echo(f"anomaly threshold: {info['anomaly_threshold']:.6g}"
                   + (f" (flags {how:.2%} of the training data)" if how else ""))
    weights = info.get("weights") or [None] * info["n_components"]
    for k, (w, mean) in enumerate(zip(weights, info["means"], strict=True)):
        weight = f"weight {w:.4f}, " if w is not None else ""
        click.echo(f"  {k}: {weight}mean [{', '.join(f'{m:.3g}' for m in mean)}]")


@main.command()
@click.argument("model_path", metavar="MODEL", required=False)
@click.argument("data", required=False)
@click.option("-o", "--output", required=True, type=OutputPath(), help="PNG file to write.")
@click.option("--stream", "stream_path", type=click.Path(dir_okay=False, exists=True),
              help="Instead: the JSON lines `streammix score MODEL -` wrote: scores, "
                   "threshold and drift alarms over the stream (no MODEL or DATA).")
@click.option("--features", help="Two features to plot (default: first two principal axes).")
@click.option("--sample", "sample_size", default=5000, show_default=True,
              type=click.IntRange(10), help="Rows drawn from DATA to show.")
@click.option("--seed", default=0, show_default=True, type=int)
@cluster_options
@verbosity_options
def plot(model_path, data, output, stream_path, features, sample_size, seed, scheduler, workers,
         verbose, quiet):
    """Draw a sample of DATA coloured by cluster, with the model on top; or a scored stream.

    Gaussian mixtures get 1-3 sigma covariance ellipses and density contours;
    anomalies are marked when the model has a threshold.

    \b
    Examples:
      streammix plot model.npz data/ -o clusters.png --features x0,x3
      streammix score model.npz - --adapt < events.jsonl > scored.jsonl
      streammix plot --stream scored.jsonl -o stream.png
    """
    from .engine import sample_rows
    from .io import ArraySource
    from .plotting import plot_model, plot_stream

    if stream_path:
        if model_path or data:
            raise click.UsageError("--stream plots a scored stream on its own: give no MODEL "
                                   "or DATA")
        plot_stream(_read_scored(stream_path), output)
        _say(f"wrote {output}", quiet)
        return
    if not (model_path and data):
        raise click.UsageError("give MODEL and DATA (or --stream SCORED.jsonl)")
    model = _load(model_path, scheduler, workers, _verbosity(verbose, quiet))
    source = model._source(data, fitted=True)
    with model._engine() as engine:
        rows = sample_rows(engine, source, sample_size, np.random.default_rng(seed))
    sample = ArraySource(rows, dtype=source.dtype)  # the sample: rows of the fitted columns
    sample.feature_names = source.feature_names
    anomalies = None
    if getattr(model, "anomaly_threshold_", None) is not None:
        anomalies = AnomalyScorer(model).predict(sample) == -1
    names = [f.strip() for f in features.split(",")] if features else None
    plot_model(model, rows, model.predict(sample), output, features=names, anomalies=anomalies)
    _say(f"wrote {output}", quiet)


def _read_scored(path) -> list[dict]:
    """The JSON lines of a scored stream; a line that is not a JSON object is named."""
    outputs = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                out = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise click.ClickException(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(out, dict):
                raise click.ClickException(f"{path}, line {number}: not a JSON object")
            outputs.append(out)
    return outputs


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--http", "address", default=None,
              help="HOST:PORT to listen on (127.0.0.1: this machine only) [default: "
                   "127.0.0.1:8000 unless --redis].")
@click.option("--redis", "redis_url", help="Consume a Redis stream instead: "
                                             "redis://HOST:PORT/DB.")
@click.option("--stream", "stream_name", help="--redis: the input stream.")
@click.option("--group", default="streammix", show_default=True,
              help="--redis: the consumer group (created if missing).")
@click.option("--consumer", help="--redis: this consumer's name [default: host-pid].")
@click.option("--output", "output_stream", help="--redis: the output stream.")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(1),
              help="--redis: most entries scored at once.")
@click.option("--claim-idle-ms", default=30_000, show_default=True, type=click.IntRange(1),
              help="--redis: claim entries another consumer left pending this long.")
@click.option("--max-latency-ms", default=100, show_default=True, type=click.IntRange(1),
              help="--redis: score a partial batch after waiting this long for more entries.")
@click.option("--adapt", is_flag=True, help="--redis: adaptive scoring (see score --adapt).")
@click.option("--snapshot", type=OutputPath(), help="--redis --adapt: its snapshot file.")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
              help="A bearer token every request must carry (needed to listen beyond "
                   "127.0.0.1).")
@click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1),
              help="Larger request bodies get 413.")
@click.option("--top-features", default=3, show_default=True, type=click.IntRange(0))
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="Outputs carry the explanation (cluster, probability, distance, top "
                   "features), or only score and anomaly.")
@click.option("--max-record-bytes", default=1 << 20, show_default=True, type=click.IntRange(1),
              help="--redis: a larger entry is an error entry.")
def serve(model_path, address, redis_url, stream_name, group, consumer, output_stream, batch,
          claim_idle_ms, max_latency_ms, adapt, snapshot, token_file, max_body_bytes,
          top_features, explain, max_record_bytes):
    """Serve MODEL's anomaly scores over HTTP (Starlette on Uvicorn).

    \b
    POST /score   a JSON object, a JSON array, or NDJSON: one output per record
    GET /healthz  GET /model (what info shows)  GET /metrics (Prometheus)
    The model file is reloaded when it changes (requests in flight finish on
    the old one).

    \b
    Example:
      streammix serve model.npz --http 127.0.0.1:8000
      curl -s localhost:8000/score -d '{"id": 1, "x0": 0.3, "x1": 2.0}'
    """
    if redis_url:
        _serve_redis(model_path, redis_url, stream_name, group, consumer, output_stream,
                     batch, claim_idle_ms, adapt, snapshot, top_features,
                     {"explain": explain, "max_record_bytes": max_record_bytes,
                      "block_ms": max_latency_ms})
        return
    import uvicorn

    from .serve.http import create_app

    address = address or "127.0.0.1:8000"
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {address!r}", param_hint="--http")
    token = None
    if token_file:
        with open(token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
    elif host not in ("127.0.0.1", "localhost", "::1"):
        raise click.UsageError(f"listening on {host} needs --token-file: without a token "
                               "anyone who reaches it can use it")
    app = create_app(model_path, token=token, max_body_bytes=max_body_bytes,
                     top_features=top_features, explain=explain)
    uvicorn.run(app, host=host, port=int(port), log_level="warning")


def _serve_redis(model_path, url, stream, group, consumer, output, batch, claim_idle_ms,
                 adapt, snapshot, top_features, options):
    import socket

    import redis

    from .serve.redis_stream import StreamConsumer

    if not (stream and output):
        raise click.UsageError("--redis needs --stream IN and --output OUT")
    if snapshot and not adapt:
        raise click.UsageError("--snapshot keeps the state of --adapt: give --adapt too")
    model = load(model_path)
    scorer = AnomalyScorer(model, contamination=getattr(model, "anomaly_contamination_", None)
                           or 0.01, top_features=top_features)
    if not hasattr(scorer, "offset_"):
        raise click.UsageError("the model has no threshold: calibrate it first")
    scoring = scorer.adapt(snapshot=snapshot) if adapt else scorer
    if adapt and snapshot:
        scoring.snapshot_path = None  # written by the consumer, after acknowledgements
    try:
        client = redis.Redis.from_url(url, socket_timeout=10)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--redis") from None
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    StreamConsumer(scoring, client, stream, group, consumer, output, batch=batch,
                   claim_idle_ms=claim_idle_ms, snapshot=snapshot, **options).run()


@main.command(name="make-data")
@click.argument("output")
@click.option("--rows", default=1_000_000, show_default=True, type=click.IntRange(1))
@click.option("--features", default=16, show_default=True, type=click.IntRange(1))
@click.option("--components", default=8, show_default=True, type=click.IntRange(1))
@click.option("--format", "fmt", default="parquet", show_default=True,
              type=click.Choice(["parquet", "zarr", "jsonl"]))
@click.option("--row-group-rows", default=250_000, show_default=True, type=click.IntRange(1),
              help="Rows per Parquet row group or Zarr chunk (generated one at a time).")
@click.option("--files", default=1, show_default=True, type=click.IntRange(1))
@click.option("--anomalies", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="jsonl: fraction of records moved far from every component.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the rows.")
@click.option("--mixture-seed", default=0, show_default=True, type=int,
              help="Seed of the mixture (weights, means, covariances): keep it, change --seed, "
                   "and the rows are new draws of the same mixture.")
@verbosity_options
def make_data(output, rows, features, components, fmt, row_group_rows, files, anomalies, seed,
              mixture_seed, verbose, quiet):
    """Write a seeded synthetic Gaussian mixture, block by block (never all in memory).

    Parquet goes to a folder of files with row groups, Zarr to a store with
    a `columns` attribute, JSON lines (records with an "id") to a file, or
    to stdout with OUTPUT "-".

    \b
    Examples:
      streammix make-data data/ --rows 20000000 --features 16 --files 8
      streammix make-data events.jsonl --format jsonl --rows 1000 --anomalies 0.01 --seed 1
    """
    same = {"seed": seed, "mixture_seed": mixture_seed}
    from . import datasets

    began = time.perf_counter()
    if fmt == "parquet":
        paths = datasets.write_parquet(output, rows, features, components, **same,
                                       row_group_rows=row_group_rows, files=files)
        where = f"{len(paths)} files in {output}"
    elif fmt == "zarr":
        datasets.write_zarr(output, rows, features, components, **same,
                            chunk_rows=row_group_rows)
        where = output
    else:
        handle = sys.stdout if output == "-" else open(output, "w")
        try:
            datasets.write_jsonl(handle, rows, features, components, **same,
                                 anomalies=anomalies)
        finally:
            if handle is not sys.stdout:
                handle.close()
        where = output
    _say(f"{rows:,} rows x {features} features ({components} components) in "
         f"{time.perf_counter() - began:.1f} s: {where}", quiet)


# -- anomaly scoring --------------------------------------------------------------------------
@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option("--contamination", default=0.01, show_default=True,
              type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
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
    model = _load(model_path, scheduler, workers, _verbosity(verbose, quiet))
    scorer = AnomalyScorer(model, contamination=contamination).fit(data)
    scorer.save(output or model_path)
    _say(f"threshold {scorer.offset_:.6g} (flags {contamination:.2%} of {data}); wrote "
         f"{output or model_path}", quiet)


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data", default="-")
@click.option("-o", "--output", type=OutputPath("either", urls=True),
              help="Parquet file of scores (DATA), or a folder or URL prefix (one part per "
                   "chunk, written by the workers, then committed); with --watch a folder.")
@click.option("--contamination", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="Calibrate on DATA itself: flag this fraction of it.")
@click.option("--threshold", type=float, help="Use this score threshold.")
@click.option("--id-field", default="id", show_default=True,
              help="Field or column passed through to the output.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "jsonl", "csv"]), help="Format of stdin records.")
@click.option("--micro-batch", "micro_batch", default=256, type=click.IntRange(1),
              help="stdin: records scored together (at most).")
@click.option("--max-latency-ms", default=10.0, show_default=True, type=click.FloatRange(0),
              help="Score a partial batch this long after its first record arrived.")
@click.option("--top-features", default=3, show_default=True, type=click.IntRange(0))
@click.option("--max-record-bytes", default=1 << 20, show_default=True, type=click.IntRange(1),
              help="Longer stdin records are error records (and read no further).")
@click.option("--max-depth", default=32, show_default=True, type=click.IntRange(1),
              help="JSON records nested deeper are error records.")
@click.option("--adapt", is_flag=True,
              help="stdin: adapt to drift: the model learns the records it does not flag, the "
                   "threshold follows the recent scores (a gaussian mixture model).")
@click.option("--forgetting-factor", default=0.999, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="--adapt: per record; the model remembers about 1/(1-f) records.")
@click.option("--window", default=5000, show_default=True, type=click.IntRange(100),
              help="--adapt: the threshold is a quantile of the last WINDOW to 2 WINDOW scores.")
@click.option("--drift/--no-drift", default=None,
              help="stdin: a Page-Hinkley test on the scores writes a drift event record "
                   '({"event": "drift", ...}) after the record where it fires '
                   "[default: with --adapt].")
@click.option("--snapshot", "snapshot", type=OutputPath(),
              help="--adapt: keep model, threshold and state in this file; a restart with the "
                   "same options resumes from it.")
@click.option("--snapshot-every", default=10_000, show_default=True, type=click.IntRange(1),
              help="--adapt: write the snapshot after this many records...")
@click.option("--snapshot-seconds", default=60.0, show_default=True,
              type=click.FloatRange(0, min_open=True), help="...or this many seconds.")
@click.option("--watch", type=click.Path(file_okay=False, exists=True),
              help="Score each new Parquet file appearing in this folder into --output.")
@click.option("--once", is_flag=True, help="With --watch: stop when no new file is left.")
@click.option("--poll-interval", default=1.0, show_default=True, type=click.FloatRange(0))
@cluster_options
@verbosity_options
def score(model_path, data, output, contamination, threshold, id_field, fmt, micro_batch,
          max_latency_ms, top_features, max_record_bytes, max_depth, adapt, forgetting_factor,
          window, drift, snapshot, snapshot_every, snapshot_seconds, watch, once, poll_interval,
          scheduler, workers, verbose, quiet):
    """Score records for anomalies: a stream on stdin, a dataset, or a watched folder.

    \b
    With DATA "-" (the default), read JSON lines or CSV (with a header) from
    stdin and write one JSON line per record, in order: the id, score,
    anomaly flag, cluster and explanation, or an error for a bad record.
    A summary goes to stderr at the end.

    \b
    Examples:
      tail -f events.jsonl | streammix score model.npz -
      streammix score model.npz data/ -o scores.parquet --contamination 0.01
      streammix score model.npz --watch incoming/ -o scored/
      streammix score model.npz - --adapt --snapshot state.npz < events.jsonl
    """
    from .scoring import score_to_parquet
    from .scoring import watch as watch_folder

    model = _load(model_path, scheduler, workers, _verbosity(verbose, quiet))
    scorer = AnomalyScorer(model, contamination=contamination or 0.01, threshold=threshold,
                           top_features=top_features)
    if watch:
        if not output:
            raise click.UsageError("--watch needs -o OUTDIR")
        if is_url(output):
            raise click.UsageError("--watch writes its scores and progress to a local folder; "
                                   "give one as -o")
        if not hasattr(scorer, "offset_"):
            raise click.UsageError("the model has no threshold: calibrate it first "
                                   "(streammix calibrate) or give --threshold")
        watch_folder(scorer, watch, output, id_field=id_field, once=once,
                     poll_interval=poll_interval, report=_report_file)
        return
    if data != "-":
        if not output:
            raise click.UsageError("scoring DATA needs -o OUT.parquet")
        if threshold is None and contamination is not None:
            scorer.fit(data)
        if not hasattr(scorer, "offset_"):
            raise click.UsageError("the model has no threshold: give --contamination F "
                                   "(calibrates on DATA) or --threshold T, or calibrate the "
                                   "model first (streammix calibrate)")
        counts = score_to_parquet(scorer, data, output, id_field=id_field)
        _say(f"{counts['rows']:,} rows, {counts['anomalies']:,} anomalies; wrote {output}", quiet)
        return
    if threshold is None and contamination is not None:
        raise click.UsageError("a stream cannot calibrate itself: calibrate the model first "
                               "(streammix calibrate) or give --threshold")
    if not hasattr(scorer, "offset_"):
        raise click.UsageError("the model has no threshold: calibrate it first "
                               "(streammix calibrate) or give --threshold")
    if snapshot and not adapt:
        raise click.UsageError("--snapshot keeps the state of --adapt: give --adapt too")
    if adapt and threshold is not None:
        raise click.UsageError("--adapt keeps flagging a fraction of the stream, which a fixed "
                               "--threshold does not say: use a model calibrated with "
                               "--contamination (fit or calibrate)")
    drift = adapt if drift is None else drift
    if adapt or drift:
        # the fraction to keep flagging: given, or the one the threshold was calibrated at
        scorer.contamination = contamination or getattr(
            scorer.model, "anomaly_contamination_", None) or scorer.contamination
        scorer = scorer.adapt(adapt=adapt, forgetting_factor=forgetting_factor, window=window,
                              snapshot=snapshot, snapshot_every=snapshot_every,
                              snapshot_seconds=snapshot_seconds)
        if getattr(scorer, "resumed", False):
            _say(f"resumed from {snapshot}: {scorer.records:,} records scored before, "
                 f"{scorer.applied:,} applied to the model", quiet)
    limits = {"max_record_bytes": max_record_bytes, "max_depth": max_depth}
    _score_stdin(scorer, fmt, id_field, micro_batch, max_latency_ms, limits)


def _report_file(name, counts):
    """One line per watched file: its counts, or why it was not scored."""
    if isinstance(counts, str):
        click.echo(f"{name}: not scored: {counts}", err=True)
    else:
        click.echo(f"{name}: {counts['rows']} rows, {counts['anomalies']} anomalies", err=True)


def _json_line(out: dict) -> str:
    """One output record as strict JSON (no NaN or Infinity); an error record if it cannot be."""
    try:
        return json.dumps(out, allow_nan=False)
    except (ValueError, TypeError) as exc:
        return json.dumps({"id": None, "error": f"output not representable as JSON ({exc})"})


def _score_stdin(scorer, fmt, id_field, batch_size, max_latency_ms, limits):
    import signal

    from .stream import read_lines, text_records

    # SIGTERM (a supervisor stopping the scorer) ends it as Ctrl-C does: through the
    # scorer's clean-up, which writes its last snapshot
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = {"records": 0, "anomalies": 0, "errors": 0, "drift events": 0}
    names = (scorer.scorer if hasattr(scorer, "scorer") else scorer)._feature_names()
    records = text_records(read_lines(sys.stdin.buffer, limits["max_record_bytes"]), fmt,
                           fields=names)
    batches = scorer.score_batches(records, id_field=id_field, batch_size=batch_size,
                                   max_latency_ms=max_latency_ms, **limits)
    try:
        for batch in batches:
            for out in batch:
                if "event" in out:
                    counts["drift events"] += 1
                else:
                    counts["records"] += 1
                    counts["errors"] += "error" in out
                    counts["anomalies"] += bool(out.get("anomaly"))
                sys.stdout.write(_json_line(out) + "\n")
            sys.stdout.flush()  # each micro-batch leaves at once
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    drift = f", {counts['drift events']} drift events" if hasattr(scorer, "drift") else ""
    click.echo(f"{counts['records']} records, {counts['anomalies']} anomalies, "
               f"{counts['errors']} errors{drift}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
