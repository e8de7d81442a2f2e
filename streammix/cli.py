"""The ``streammix`` command line: a thin shell over the estimators.

User errors (bad data, a missing file, a bad model file, bad parameters) exit
with code 2 and one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click
import numpy as np

from .estimators import AnomalyScorer, GaussianMixture, load
from .exceptions import StreammixError


class _Group(click.Group):
    """Turns user errors into ``Error: ...`` and exit code 2, unless ``--debug``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (StreammixError, ValueError, OSError) as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="streammix")
def main(debug):
    """Cluster data larger than memory and score streams for anomalies."""


def _columns(value):
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


@main.command()
@click.argument("data")
@click.option("-o", "--output", required=True, help="Model file to write (.npz).")
@click.option("-k", "--n-components", default=1, show_default=True, type=click.IntRange(1))
@click.option("--covariance-type", default="full", show_default=True,
              type=click.Choice(["full", "tied", "diag", "spherical"]))
@click.option("--init", "init_params", default="kmeans", show_default=True,
              type=click.Choice(["kmeans", "k-means++", "random", "random_from_data"]))
@click.option("--n-init", default=1, show_default=True, type=click.IntRange(1))
@click.option("--max-iter", default=100, show_default=True, type=click.IntRange(0))
@click.option("--tol", default=1e-3, show_default=True, type=float)
@click.option("--columns", help="Comma-separated columns to use (Parquet).")
@click.option("--chunk-size", type=click.IntRange(1), help="Rows per chunk.")
@click.option("--dtype", default="float64", type=click.Choice(["float64", "float32"]))
@click.option("--scheduler", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786.")
@click.option("--workers", type=click.IntRange(1), help="Threads of the in-process scheduler.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--checkpoint", type=click.Path(file_okay=False),
              help="Checkpoint directory: resume a killed fit from its last iteration.")
@click.option("--restart", is_flag=True, help="Discard what --checkpoint holds; start afresh.")
@click.option("--contamination", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="Also calibrate the anomaly threshold: flag this fraction of DATA.")
@click.option("-v", "--verbose", count=True, help="Print the lower bound per iteration.")
def fit(data, output, n_components, covariance_type, init_params, n_init, max_iter, tol, columns,
        chunk_size, dtype, scheduler, workers, seed, checkpoint, restart, contamination,
        verbose):
    """Fit a Gaussian mixture on DATA (Parquet file/dir/glob or Zarr store), out-of-core.

    \b
    Example:
      streammix fit data/ -k 5 --covariance-type diag -o model.npz
      streammix fit data/ -k 5 --checkpoint ckpt/ -o model.npz   # resumable
    """
    from .io import _is_zarr_path, read_parquet, read_zarr

    source = (read_zarr(data) if _is_zarr_path(data)
              else read_parquet(data, columns=_columns(columns)))
    model = GaussianMixture(
        n_components, covariance_type=covariance_type, init_params=init_params, n_init=n_init,
        max_iter=max_iter, tol=tol, chunk_size=chunk_size, dtype=dtype, scheduler=scheduler,
        n_workers=workers, random_state=seed, verbose=verbose, verbose_interval=1,
        checkpoint=checkpoint, restart=restart)
    began = time.perf_counter()
    model.fit(source)
    if contamination is not None:
        AnomalyScorer(model, contamination=contamination).fit(source).save(output)
    else:
        model.save(output)
    click.echo(f"fitted {n_components}-component {covariance_type} mixture on "
               f"{source.n_rows:,} rows x {source.n_features} features in "
               f"{time.perf_counter() - began:.1f} s: {model.n_iter_} iterations, "
               f"converged={model.converged_}, lower bound {model.lower_bound_:.6f}; "
               f"wrote {output}", err=True)


def _describe(model) -> dict:
    info = {"model": type(model).__name__, "params": {}, "n_features": model.n_features_in_}
    for name, value in model.get_params().items():
        info["params"][name] = value.tolist() if isinstance(value, np.ndarray) else value
    names = getattr(model, "feature_names_in_", None)
    info["feature_names"] = None if names is None else [str(n) for n in names]
    info.update(n_components=int(model.means_.shape[0]), weights=model.weights_.tolist(),
                means=model.means_.tolist(), converged=model.converged_,
                n_iter=model.n_iter_, lower_bound=model.lower_bound_,
                anomaly_threshold=getattr(model, "anomaly_threshold_", None),
                anomaly_contamination=getattr(model, "anomaly_contamination_", None))
    return info


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model_path, as_json):
    """Describe a saved model.

    \b
    Example:
      streammix info model.npz --json
    """
    info = _describe(load(model_path))
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    click.echo(f"{info['model']}: {info['n_components']} components "
               f"({info['params'].get('covariance_type')}), {info['n_features']} features")
    if info["feature_names"]:
        click.echo(f"features: {', '.join(info['feature_names'])}")
    click.echo(f"converged: {info['converged']} after {info['n_iter']} iterations, "
               f"lower bound {info['lower_bound']:.6f}")
    if info["anomaly_threshold"] is not None:
        how = info["anomaly_contamination"]
        click.echo(f"anomaly threshold: {info['anomaly_threshold']:.6g}"
                   + (f" (flags {how:.2%} of the training data)" if how else ""))
    for k, (w, mean) in enumerate(zip(info["weights"], info["means"], strict=True)):
        click.echo(f"  component {k}: weight {w:.4f}, mean "
                   f"[{', '.join(f'{m:.3g}' for m in mean)}]")


def _load_scorer(model_path, contamination, threshold, top_features):
    model = load(model_path)
    return AnomalyScorer(model, contamination=contamination or 0.01, threshold=threshold,
                         top_features=top_features)


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option("--contamination", default=0.01, show_default=True,
              type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="Fraction of DATA to put below the threshold.")
@click.option("-o", "--output", help="Write the calibrated model here (default: MODEL).")
def calibrate(model_path, data, contamination, output):
    """Calibrate MODEL's anomaly threshold on DATA and save it with the model.

    \b
    Example:
      streammix calibrate model.npz data/ --contamination 0.01
    """
    scorer = AnomalyScorer(load(model_path), contamination=contamination).fit(data)
    scorer.save(output or model_path)
    click.echo(f"threshold {scorer.offset_:.6g} (flags {contamination:.2%} of {data}); wrote "
               f"{output or model_path}", err=True)


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data", default="-")
@click.option("-o", "--output", help="Parquet file of scores (DATA), or a folder (--watch).")
@click.option("--contamination", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="Calibrate on DATA itself: flag this fraction of it.")
@click.option("--threshold", type=float, help="Use this score threshold.")
@click.option("--id-field", default="id", show_default=True,
              help="Field or column passed through to the output.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "jsonl", "csv"]), help="Format of stdin records.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--max-latency-ms", default=10.0, show_default=True,
              type=click.FloatRange(0),
              help="Score a partial batch this long after its first record arrived.")
@click.option("--top-features", default=3, show_default=True, type=click.IntRange(0))
@click.option("--watch", type=click.Path(file_okay=False, exists=True),
              help="Score each new Parquet file appearing in this folder into --output.")
@click.option("--once", is_flag=True, help="With --watch: stop when no new file is left.")
@click.option("--poll-interval", default=1.0, show_default=True, type=click.FloatRange(0))
def score(model_path, data, output, contamination, threshold, id_field, fmt, batch_size,
          max_latency_ms, top_features, watch, once, poll_interval):
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
    """
    from .scoring import score_to_parquet
    from .scoring import watch as watch_folder

    scorer = _load_scorer(model_path, contamination, threshold, top_features)
    if watch:
        if not output:
            raise click.UsageError("--watch needs -o OUTDIR")
        if not hasattr(scorer, "offset_"):
            raise click.UsageError("the model has no threshold: calibrate it first "
                                   "(streammix calibrate) or give --threshold")
        watch_folder(scorer, watch, output, id_field=id_field, once=once,
                     poll_interval=poll_interval,
                     report=lambda name, c: click.echo(f"{name}: {c['rows']} rows, "
                                                       f"{c['anomalies']} anomalies", err=True))
        return
    if data != "-":
        if not output:
            raise click.UsageError("scoring DATA needs -o OUT.parquet")
        if threshold is None and contamination is not None:
            scorer.fit(data)
        scorer._offset()
        counts = score_to_parquet(scorer, data, output, id_field=id_field)
        click.echo(f"{counts['rows']} rows, {counts['anomalies']} anomalies; wrote {output}",
                   err=True)
        return
    if threshold is None and contamination is not None:
        raise click.UsageError("a stream cannot calibrate itself: calibrate the model first "
                               "(streammix calibrate) or give --threshold")
    _score_stdin(scorer, fmt, id_field, batch_size, max_latency_ms)


def _score_stdin(scorer, fmt, id_field, batch_size, max_latency_ms):
    from .stream import text_records

    counts = {"records": 0, "anomalies": 0, "errors": 0}
    batches = scorer.score_batches(text_records(sys.stdin, fmt), id_field=id_field,
                                   batch_size=batch_size, max_latency_ms=max_latency_ms)
    try:
        for batch in batches:
            for out in batch:
                counts["records"] += 1
                counts["errors"] += "error" in out
                counts["anomalies"] += bool(out.get("anomaly"))
                sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()  # each micro-batch leaves at once
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    click.echo(f"{counts['records']} records, {counts['anomalies']} anomalies, "
               f"{counts['errors']} errors", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
