"""Where a pass spends its time: cProfile of EM and Lloyd passes, one thread.

Run:  .venv/bin/python scripts/profile_passes.py [--rows 1000000]

Each model is fitted once to warm up (compiled kernels), then profiled over a
few iterations with the synchronous scheduler, so that every call, the
compiled loops and BLAS included, runs on the profiled thread. Prints, per
model, the functions with the most own time and their share of the total,
as a markdown table (it goes into docs/performance.md).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import warnings

import numpy as np

K, D = 16, 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def profile(fit, top):
    fit()  # warm up
    profiler = cProfile.Profile()
    profiler.enable()
    fit()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    print("| function | own seconds | share |")
    print("|---|---:|---:|")
    for (file, line, name), (_, _, own, _, _) in rows:
        short = file.split("site-packages/")[-1].removeprefix(ROOT + os.sep)
        where = name if file == "~" else f"{short}:{line} {name}"
        print(f"| `{where.replace('|', '/')}` | {own:.3f} | {own / total:.0%} |")
    print(f"| total | {total:.3f} | |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    import streammix as sm
    from streammix.datasets import mixture_blocks

    X = np.concatenate([x for x, _ in mixture_blocks(args.rows, D, K, seed=1)])
    rng = np.random.default_rng(0)
    means = X[rng.choice(len(X), K, replace=False)]
    warnings.simplefilter("ignore")
    gmm = {"weights_init": np.full(K, 1 / K), "means_init": means,
           "precisions_init": np.tile(np.eye(D) * 0.05, (K, 1, 1))}
    for dtype in ("float64", "float32"):
        print(f"\n## GaussianMixture, full, {dtype}: 5 EM iterations, "
              f"{args.rows:,} x {D}, K={K}, one thread\n")
        profile(lambda d=dtype: sm.GaussianMixture(K, max_iter=5, tol=0, dtype=d,
                                                   scheduler="synchronous", **gmm).fit(X),
                args.top)
    print(f"\n## KMeans: 20 Lloyd iterations, {args.rows:,} x {D}, k={K}, one thread\n")
    profile(lambda: sm.KMeans(K, init=means, max_iter=20, tol=0,
                              scheduler="synchronous").fit(X), args.top)


if __name__ == "__main__":
    main()
