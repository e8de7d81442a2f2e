"""Benchmark: streammix against Spark MLlib (local[2]) per iteration, on the same data.

Run:  .venv/bin/python benchmarks/bench_spark.py --install   (first time: makes .bench-spark/)
      .venv/bin/python benchmarks/bench_spark.py

Spark runs in its own virtual environment (pyspark is not a dependency of
streammix), in a child process, on the same Parquet file, with its own
in-memory cache filled before timing. Per-iteration times are
(time of 12 iterations - time of 2) / 10 for both sides, the best of 3 trials; Java must be
installed (``java -version``). The data are standard normal noise, so EM
and Lloyd cannot converge early and every run does all its iterations
(checked on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from _benchlib import per_iteration as best_per_iteration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARK_ENV = os.path.join(ROOT, ".bench-spark")
K, D = 16, 16

SPARK_CHILD = r"""
import json, sys, time
from pyspark.sql import SparkSession
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.clustering import GaussianMixture, KMeans
path, k = sys.argv[1], int(sys.argv[2])
spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "6g")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
frame = spark.read.parquet(path)
data = VectorAssembler(inputCols=frame.columns, outputCol="features").transform(frame)
data = data.select("features").cache()
data.count()
def per_iteration(make, trials=3):
    make(2).fit(data)  # warm up
    times = []
    for _ in range(trials):
        began = time.perf_counter(); a = make(2).fit(data); short = time.perf_counter() - began
        began = time.perf_counter(); b = make(12).fit(data); long = time.perf_counter() - began
        done = b.summary.numIter - a.summary.numIter
        assert done >= 8, f"Spark stopped early: {a.summary.numIter}, {b.summary.numIter}"
        times.append((long - short) / done)
    return min(times)
out = {
    "gmm": per_iteration(lambda n: GaussianMixture(k=k, maxIter=n, tol=0.0, seed=0)),
    "kmeans": per_iteration(lambda n: KMeans(k=k, maxIter=n, tol=0.0, seed=0,
                                             initMode="random")),
}
print(json.dumps(out))
spark.stop()
"""


def install():
    subprocess.run([sys.executable, "-m", "venv", SPARK_ENV], check=True)
    pip = os.path.join(SPARK_ENV, "bin", "pip")
    subprocess.run([pip, "install", "--quiet", "pyspark", "numpy"], check=True)


def streammix_per_iteration(path):
    import streammix as sm

    data = sm.read_parquet(path)
    X = np.concatenate([b for c in data.plan() for _, b in data.read_chunk(c)])
    rng = np.random.default_rng(0)
    means = X[rng.choice(len(X), K, replace=False)]
    gmm_init = {"weights_init": np.full(K, 1 / K), "means_init": means,
                "precisions_init": np.tile(np.eye(D) * 0.05, (K, 1, 1))}

    def per_iteration(make):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return best_per_iteration(lambda n: make(n).fit(X).n_iter_)

    return {
        "gmm": per_iteration(lambda n: sm.GaussianMixture(K, max_iter=n, tol=0, **gmm_init)),
        "kmeans": per_iteration(lambda n: sm.KMeans(K, init=means, max_iter=n, tol=0)),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--install", action="store_true", help="create .bench-spark/ first")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.install or not os.path.exists(SPARK_ENV):
        install()
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        noise = np.random.default_rng(6).standard_normal((args.rows, D))
        pq.write_table(pa.table({f"x{j}": noise[:, j] for j in range(D)}),
                       os.path.join(tmp, "noise.parquet"), row_group_size=250_000)
        ours = streammix_per_iteration(tmp)
        child = subprocess.run([os.path.join(SPARK_ENV, "bin", "python"), "-c", SPARK_CHILD,
                                tmp, str(K)], capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"Spark failed:\n{child.stderr[-2000:]}")
        spark = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\n## Against Spark MLlib local[2]: {args.rows:,} x {D}, k={K}, per iteration\n")
    print("| model | streammix s/iter | Spark s/iter | streammix speed-up |")
    print("|---|---:|---:|---:|")
    for name in ("gmm", "kmeans"):
        speedup = spark[name] / ours[name]
        print(f"| {name} | {ours[name]:.3f} | {spark[name]:.3f} | {speedup:.1f}x |")


if __name__ == "__main__":
    main()
