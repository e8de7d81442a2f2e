"""Where a pass spends its time: cProfile of EM and Lloyd passes, one thread.

Run:  .venv/bin/python benchmarks/profile_passes.py [--rows 1000000]

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


def stages(X, means, dtype, tile=390, repeats=3):
    """Inside the compiled calls: ns per row of each stage of a full-covariance E-step tile.

    Each stage is timed alone over all the tiles of ``X`` (one thread), with
    the same arrays the E-step uses, so the parts add up to about the whole.
    """
    import time

    from threadpoolctl import threadpool_limits

    from streammix.core import gaussian as gm
    from streammix.core import kernels

    X = X.astype(dtype)
    params = gm.GaussianParams(np.full(K, 1 / K), means, np.tile(np.eye(D), (K, 1, 1)), "full")
    kernel = params.kernel(X.dtype)
    pairs = gm._pairs(D, "full")
    width = gm._n_features_of(pairs, D)
    feats = np.empty((width, tile), dtype=X.dtype)
    resp = np.empty((tile, K), dtype=X.dtype)
    starts = range(0, len(X) - tile + 1, tile)
    # realistic exp input: one tile's log-weights, shifted by their row maxima
    floor, _ = kernels.exp_floor(X.dtype)
    shifted = np.empty((tile, K), dtype=X.dtype)
    kernels.expansion_log_weights(np.ascontiguousarray(X[:tile]), kernel["g"], pairs,
                                  kernel["AB"], kernel["c0"], kernel["const"], floor,
                                  kernels.typed_constants(X.dtype),
                                  np.empty((1, width, tile), dtype=X.dtype), shifted,
                                  np.empty(tile, dtype=X.dtype))

    def best(step):
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            for first in starts:
                step(first)
            times.append(time.perf_counter() - began)
        return min(times) / (len(starts) * tile) * 1e9

    with threadpool_limits(1):
        parts = {
            "features (compiled loop)": lambda f: kernels.features(
                X[f : f + tile], kernel["g"], pairs, feats),
            "E-step GEMM (features @ AB)": lambda f: np.dot(feats.T, kernel["AB"], resp),
            "exp (NumPy)": lambda f: np.exp(shifted, out=resp),
            "M-step GEMM (features @ resp)": lambda f: np.dot(feats, resp),
            "whole E-step (estep_stats)": None,
        }
        for name, step in parts.items():
            if step is None:
                began = time.perf_counter()
                for _ in range(repeats):
                    gm.estep_stats(params, X)
                ns = (time.perf_counter() - began) / repeats / len(X) * 1e9
            else:
                ns = best(step)
            print(f"| {name} | {ns:.0f} |")


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
    for dtype in ("float64", "float32"):
        print(f"\n## Inside a full-covariance E-step, {dtype}: ns per row, one thread\n")
        print("| stage | ns/row |")
        print("|---|---:|")
        stages(X, means, dtype)
    print(f"\n## KMeans: 20 Lloyd iterations, {args.rows:,} x {D}, k={K}, one thread\n")
    profile(lambda: sm.KMeans(K, init=means, max_iter=20, tol=0,
                              scheduler="synchronous").fit(X), args.top)


if __name__ == "__main__":
    main()
