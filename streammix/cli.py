"""The ``streammix`` command line: a thin shell over the estimators.

User errors (bad data, a missing file, a bad model file, bad parameters) exit
with code 2 and one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import time

import click
import numpy as np

from .estimators import GaussianMixture, load
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
@click.option("-v", "--verbose", count=True, help="Print the lower bound per iteration.")
def fit(data, output, n_components, covariance_type, init_params, n_init, max_iter, tol, columns,
        chunk_size, dtype, scheduler, workers, seed, checkpoint, restart, verbose):
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
                n_iter=model.n_iter_, lower_bound=model.lower_bound_)
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
    for k, (w, mean) in enumerate(zip(info["weights"], info["means"], strict=True)):
        click.echo(f"  component {k}: weight {w:.4f}, mean "
                   f"[{', '.join(f'{m:.3g}' for m in mean)}]")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
