"""Benchmark: k-means per Lloyd iteration against scikit-learn and dask-ml, and seeding cost.

Run:  .venv/bin/python benchmarks/bench_kmeans.py [--rows 1000000]
(dask-ml is optional: ``.venv/bin/pip install dask-ml``.)

Per-iteration times are (time of a 12-iteration fit - time of a 2-iteration
fit) / 10 from the same initial centres, so set-up costs cancel; every
implementation is checked to have run all its iterations. Everything runs in
this one process, side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter

import numpy as np
from _benchlib import per_iteration

K, D = 16, 16


def timed(fn):
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    from sklearn.cluster import KMeans as SkKMeans
    from sklearn.cluster import MiniBatchKMeans as SkMiniBatch

    import streammix as sm
    from streammix.datasets import mixture_blocks
    from streammix.engine import Engine
    from streammix.estimators.kmeans import initial_centers
    from streammix.io import ArraySource

    X = np.concatenate([x for x, _ in mixture_blocks(args.rows, D, K, seed=3)])
    init = X[np.random.default_rng(0).choice(len(X), K, replace=False)]
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores")
    print(f"\n## Lloyd iteration, in memory: {args.rows:,} x {D}, k={K}, float64\n")
    print("| implementation | s/iter | streammix / it |")
    print("|---|---:|---:|")
    warnings.simplefilter("ignore")
    ours = per_iteration(lambda m: sm.KMeans(K, init=init, max_iter=m, tol=0).fit(X).n_iter_)
    rows = [("streammix KMeans", ours)]
    rows.append(("scikit-learn KMeans (lloyd)", per_iteration(
        lambda m: SkKMeans(K, init=init, n_init=1, max_iter=m, tol=0).fit(X).n_iter_)))
    try:
        import dask.array as da
        from dask_ml.cluster import KMeans as DaskKMeans

        dX = da.from_array(X, chunks=(len(X) // 8, D)).persist()
        rows.append(("dask-ml KMeans", per_iteration(
            lambda m: DaskKMeans(K, init=init, max_iter=m, tol=0).fit(dX).n_iter_)))
    except ImportError:
        print("(dask-ml not installed: skipped)")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} | {ours / seconds:.2f} |", flush=True)

    print("\n## Seeding (k=16)\n")
    print("| seeding | seconds | data passes | inertia after 20 more Lloyd iterations |")
    print("|---|---:|---:|---:|")
    reads = Counter()
    original = ArraySource.read_chunk

    def counting(self, chunk, payload=None):
        reads[chunk.index] += 1
        yield from original(self, chunk, payload)

    ArraySource.read_chunk = counting
    source = ArraySource(X)
    for init_name in ("k-means||", "k-means++"):
        reads.clear()
        with Engine() as engine:
            seconds, (centers,) = timed(lambda i=init_name, e=engine: initial_centers(
                e, source, i, K, [np.random.SeedSequence(0)]))
        passes = min(reads.values(), default=0)  # before the fit below reads again
        final = sm.KMeans(K, init=centers, max_iter=20).fit(X).inertia_
        print(f"| streammix {init_name} | {seconds:.2f} | {passes} | {final:.4g} |")
    ArraySource.read_chunk = original
    from sklearn.cluster import kmeans_plusplus

    seconds, (centers, _) = timed(lambda: kmeans_plusplus(X, K, random_state=0))
    final = SkKMeans(K, init=centers, n_init=1, max_iter=20).fit(X).inertia_
    print(f"| scikit-learn kmeans_plusplus | {seconds:.2f} | in memory | {final:.4g} |")

    print("\n## One mini-batch epoch, batch_size 4096\n")
    print("| implementation | s/epoch |")
    print("|---|---:|")
    ours_mb, _ = timed(lambda: sm.MiniBatchKMeans(K, init=init, batch_size=4096, max_iter=1,
                                                  max_no_improvement=None,
                                                  compute_labels=False).fit(X))
    sk = SkMiniBatch(K, init=init, batch_size=4096, n_init=1)

    def sk_epoch():
        for start in range(0, len(X), 4096):
            sk.partial_fit(X[start : start + 4096])

    theirs_mb, _ = timed(sk_epoch)
    print(f"| streammix MiniBatchKMeans.fit (1 epoch, incl. init sample) | {ours_mb:.3f} |")
    print(f"| scikit-learn partial_fit loop | {theirs_mb:.3f} |")


if __name__ == "__main__":
    main()
