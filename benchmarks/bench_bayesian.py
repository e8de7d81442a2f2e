"""Benchmark: BayesianGaussianMixture's variational iteration against scikit-learn's.

Run:  .venv/bin/python benchmarks/bench_bayesian.py [--rows 1000000] [--repeats 3]

Prints a markdown table (it goes into docs/performance.md): seconds per
variational iteration in memory (rows x 16 features, K=16), streammix and
scikit-learn measured in this one run, and their ratio, for each covariance
type. streammix: (time of a fit of 1 + repeats iterations - time of a fit of 1)
/ repeats, so the priors' pass and the initialisation cancel out.
scikit-learn: its own E-step, M-step and lower bound, stepped on a fitted
model (the cost of a step does not depend on the parameter values). Times
are the best of a few trials: on a shared machine noise only adds.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
from _benchlib import best_time, per_iteration

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

K, D = 16, 16


def main():
    from sklearn.mixture import BayesianGaussianMixture as SkBGM

    import streammix as sm
    from streammix.datasets import mixture_blocks

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X = np.concatenate([x for x, _ in mixture_blocks(args.rows, D, K, seed=1)])
    print(f"\n## Variational iteration, in memory: {args.rows:,} x {D}, K={K}, float64, "
          f"{os.cpu_count()} cores\n")
    print("| covariance | streammix s/iter | scikit-learn s/iter | ratio |")
    print("|---|---:|---:|---:|")
    for kind in ("full", "tied", "diag", "spherical"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")

            def ours(n, kind=kind):
                return sm.BayesianGaussianMixture(
                    K, covariance_type=kind, max_iter=n, tol=0, random_state=0,
                    init_params="random_from_data").fit(X).n_iter_

            t_ours = per_iteration(ours, short=1, long=1 + args.repeats, trials=2)
            sk = SkBGM(n_components=K, covariance_type=kind, max_iter=1, tol=0,
                       init_params="random_from_data", random_state=0).fit(X[:5000])
            sk._check_parameters(X)

            def step(sk=sk):
                log_prob_norm, log_resp = sk._e_step(X)
                sk._m_step(X, log_resp)
                sk._compute_lower_bound(log_resp, log_prob_norm)

            t_sk = best_time(step, args.repeats)
        print(f"| {kind} | {t_ours:.3f} | {t_sk:.3f} | {t_ours / t_sk:.3f} |", flush=True)


if __name__ == "__main__":
    main()
