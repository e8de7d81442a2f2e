"""``info`` and ``plot``: what a model holds, in words and pictures."""

from __future__ import annotations

import json

import click

from ..describe import describe
from ..estimators import load
from ..plotting import SAMPLE_ROWS
from .app import main
from .options import (
    OutputPath,
    cluster_options,
    given_storage_options,
    load_model,
    refuse_unused,
    say,
    split_names,
    storage_option,
    verbosity,
    verbosity_options,
)


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (everything).")
@click.option("--all", "show_all", is_flag=True,
              help="Bayesian mixture: list the components that hold about nothing too.")
@storage_option
def info(model_path, as_json, show_all):
    """Describe a saved model: type, parameters, features, k, weights, convergence, threshold.

    \b
    A Bayesian mixture's components of about zero weight (under 0.1 %, or
    under one training row's worth) are counted but not listed, unless --all.

    \b
    Example:
      streammix info model.npz --json
    """
    info = describe(load(model_path, given_storage_options()))
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
                   f"{_lower_bound(info)}")
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
    hidden = set() if show_all else set(info.get("empty_components", ()))
    for k, (w, mean) in enumerate(zip(weights, info["means"], strict=True)):
        if k in hidden:
            continue
        weight = f"weight {w:.4f}, " if w is not None else ""
        click.echo(f"  {k}: {weight}mean [{', '.join(f'{m:.3g}' for m in mean)}]")
    if hidden:
        click.echo(f"  ({len(hidden)} components of about zero weight not shown: "
                   "--all lists them)")


def _lower_bound(info) -> str:
    """The lower bound per row for every mixture (a Bayesian one keeps a sum: its total
    and rows follow)."""
    if "lower_bound_per_row" not in info:
        return f"lower bound {info['lower_bound']:.6f} per row"
    per_row = info["lower_bound_per_row"]
    if per_row is None:
        return f"lower bound {info['lower_bound']:.6f} (a sum)"
    return (f"lower bound {per_row:.6f} per row ({info['lower_bound']:.6g} summed over "
            f"{info['training_rows']:,.0f} rows)")


@main.command()
@click.argument("model_path", metavar="MODEL", required=False)
@click.argument("data", required=False)
@click.option("-o", "--output", required=True, type=OutputPath(), help="PNG file to write.")
@click.option("--stream", "stream_path", type=click.Path(dir_okay=False, exists=True),
              help="Instead: the JSON lines `streammix score MODEL -` wrote: scores, "
                   "threshold and drift alarms over the stream (no MODEL or DATA).")
@click.option("--threshold", type=float,
              help="--stream of a static run (its records carry no threshold): draw this "
                   "threshold [default: MODEL's calibrated one, when MODEL is given].")
@click.option("--show-empty", is_flag=True,
              help="Bayesian mixture: also draw the empty components (grey, dashed).")
@click.option("--features", help="Two features to plot (default: first two principal axes).")
@click.option("--sample", "sample_size", default=SAMPLE_ROWS, show_default=True,
              type=click.IntRange(10), help="Rows drawn from DATA to show.")
@click.option("--seed", default=0, show_default=True, type=int)
@cluster_options
@verbosity_options
def plot(model_path, data, output, stream_path, threshold, show_empty, features, sample_size, seed,
         scheduler, workers, verbose, quiet):
    """Draw a sample of DATA coloured by cluster, with the model on top; or a scored stream.

    Gaussian mixtures get 1-3 sigma covariance ellipses and density contours;
    anomalies are marked when the model has a threshold.

    \b
    Examples:
      streammix plot model.npz data/ -o clusters.png --features x0,x3
      streammix score model.npz - --adapt < events.jsonl > scored.jsonl
      streammix plot --stream scored.jsonl -o stream.png
      streammix plot model.npz --stream scored.jsonl -o stream.png   # static: model's threshold
    """
    from .. import plotting  # matplotlib: only when needed
    from ..scoring.stdin import read_scored

    if stream_path:
        refuse_unused(click.get_current_context(), [
            (name, False, "to a model's plot (MODEL DATA), not to --stream") for name in (
                "features", "sample_size", "seed", "scheduler", "workers")])
        if data:
            raise click.UsageError("--stream plots a scored stream: give no DATA (MODEL only "
                                   "for its threshold)")
        if show_empty:
            raise click.UsageError("--show-empty applies to a model's plot, not to --stream")
        if model_path and threshold is not None:
            raise click.UsageError("give MODEL or --threshold for the stream's threshold, "
                                   "not both")
        outputs = read_scored(stream_path)
        if (model_path or threshold is not None) and any("threshold" in o for o in outputs):
            # no option is ignored: an adaptive run's own thresholds are what judged it
            raise click.UsageError(f"{stream_path} carries the thresholds its records were "
                                   "judged by (an adaptive run): give no MODEL or --threshold")
        if model_path:  # a static run's records carry no threshold: the model's
            threshold = getattr(load_model(model_path, scheduler, workers,
                                           verbosity(verbose, quiet)),
                                "anomaly_threshold_", None)
            if threshold is None:
                raise click.UsageError(f"{model_path} has no anomaly threshold: calibrate it "
                                       "(streammix calibrate) or give --threshold")
        plotting.plot_stream(outputs, output, threshold=threshold)
        say(f"wrote {output}", quiet)
        return
    if threshold is not None:
        raise click.UsageError("--threshold applies to --stream (a static run's threshold)")
    if not (model_path and data):
        raise click.UsageError("give MODEL and DATA (or --stream SCORED.jsonl)")
    model = load_model(model_path, scheduler, workers, verbosity(verbose, quiet))
    if show_empty and not hasattr(model, "effective_components"):
        raise click.UsageError("--show-empty applies to a Bayesian mixture (bayesian-gmm), "
                               f"not to {type(model).__name__}")
    plotting.plot_sample(model, data, output, features=split_names(features),
                         sample_size=sample_size, seed=seed, show_empty=show_empty)
    say(f"wrote {output}", quiet)
