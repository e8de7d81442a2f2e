"""Benchmark: the cost of sample weights, and k-means on sparse input, against scikit-learn.

Run:  .venv/bin/python benchmarks/bench_weights_sparse.py [--rows 1000000]

Per-iteration times are (time of a 12-iteration fit - time of a 2-iteration
fit) / 10 (sparse: 7 and 2) from the same start, best of 3 (see ``_benchlib.per_iteration``);
everything runs in this one process, side by side. Sparse data: TF-IDF-like
rows (``--columns`` wide, ``--nnz`` stored values per row), which scikit-learn
clusters in place and streammix chunk by chunk without densifying.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import scipy.sparse as sp
from _benchlib import per_iteration
from sklearn.cluster import KMeans as SkKMeans

import streammix as sm

K, D = 16, 16


def kmeans_fit(make, X, **fit_kw):
    def fit(n):
        return make(n).fit(X, **fit_kw).n_iter_
    return fit


def gmm_fit(X, **fit_kw):
    init = {"means_init": X[:K], "weights_init": np.full(K, 1 / K),
            "precisions_init": np.stack([np.eye(D)] * K)}

    def fit(n):
        return sm.GaussianMixture(K, max_iter=n, tol=0, **init).fit(X, **fit_kw).n_iter_
    return fit


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sparse-rows", type=int, default=200_000)
    parser.add_argument("--columns", type=int, default=100_000)
    parser.add_argument("--nnz", type=int, default=50)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # fixed iteration counts: no convergence warnings
    rng = np.random.default_rng(0)

    X = rng.normal(size=(args.rows, D))
    weights = rng.integers(1, 4, args.rows).astype(float)
    print(f"Sample weights: {args.rows:,} x {D}, K={K}, ms per iteration (in memory)")
    print(f"{'model':<22}{'unweighted':>12}{'weighted':>10}{'ratio':>7}")
    for name, make_fit in (
            ("GaussianMixture full", lambda **kw: gmm_fit(X, **kw)),
            ("KMeans", lambda **kw: kmeans_fit(
                lambda n: sm.KMeans(K, init=X[:K], n_init=1, max_iter=n, tol=0), X, **kw))):
        plain = per_iteration(make_fit())
        weighted = per_iteration(make_fit(sample_weight=weights))
        print(f"{name:<22}{plain * 1e3:>12.1f}{weighted * 1e3:>10.1f}{weighted / plain:>7.2f}")

    n, d = args.sparse_rows, args.columns
    rows = np.repeat(np.arange(n), args.nnz)
    cols = rng.integers(0, d, n * args.nnz)
    Xs = sp.csr_matrix((rng.random(n * args.nnz), (rows, cols)), shape=(n, d))
    Xs.sum_duplicates()
    init = Xs[:K].toarray()
    print(f"\nSparse k-means: {n:,} x {d:,} CSR, {args.nnz} values a row, K={K}, "
          "ms per Lloyd iteration")
    # 2 and 7 iterations: random sparse rows reach a fixed partition after about 9
    ours = per_iteration(kmeans_fit(
        lambda it: sm.KMeans(K, init=init, n_init=1, max_iter=it, tol=0), Xs), long=7)
    theirs = per_iteration(kmeans_fit(
        lambda it: SkKMeans(K, init=init, n_init=1, max_iter=it, tol=0), Xs), long=7)
    same = np.allclose(sm.KMeans(K, init=init, n_init=1, max_iter=5, tol=0).fit(Xs)
                       .cluster_centers_,
                       SkKMeans(K, init=init, n_init=1, max_iter=5, tol=0).fit(Xs)
                       .cluster_centers_, rtol=1e-9, atol=1e-12)
    print(f"{'streammix':<14}{ours * 1e3:>10.1f}")
    print(f"{'scikit-learn':<14}{theirs * 1e3:>10.1f}   ratio {theirs / ours:.2f}x "
          f"(same centres after 5 iterations: {same})")


if __name__ == "__main__":
    main()
