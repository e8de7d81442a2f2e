"""``predict``, ``sample`` and ``make-data``: rows out."""

from __future__ import annotations

import sys
import time

import click
import pyarrow as pa

from .. import datasets
from ..describe import feature_names
from ..estimators import load
from ..estimators.mixture import BaseMixture
from ..io.parquet import write_table
from ..scoring.batch import predict_to_parquet
from .app import main
from .options import OutputPath, cluster_options, load_model, say, verbosity, verbosity_options


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
    model = load_model(model_path, scheduler, workers, verbosity(verbose, quiet))
    rows = predict_to_parquet(model, data, output, proba=proba, id_field=id_field)
    say(f"{rows:,} rows; wrote {output}", quiet)



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
    model = load(model_path)
    if not isinstance(model, BaseMixture):
        raise ValueError(f"{model_path}: sampling needs a Gaussian mixture model")
    if seed is not None:
        model.random_state = seed
    X, y = model.sample(n_samples)
    names = feature_names(model)
    write_table(output, pa.table({**{n: X[:, j] for j, n in enumerate(names)},
                                  "component": y}))
    say(f"{n_samples:,} rows; wrote {output}", quiet)



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
        datasets.write_jsonl(sys.stdout if output == "-" else output, rows, features,
                             components, **same, anomalies=anomalies)
        where = output
    say(f"{rows:,} rows x {features} features ({components} components) in "
         f"{time.perf_counter() - began:.1f} s: {where}", quiet)


