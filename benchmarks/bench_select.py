"""Benchmark: ``sm.select``'s default (10 starts screened on a sample) against one start.

Run:  .venv/bin/python benchmarks/bench_select.py [--rows 1000000] [--features 8]
      [--components 6] [--k 2..12] [--parquet DIR]

Both selections run in this one process on the same data, a seeded mixture of
``--components`` Gaussians (``streammix.datasets.mixture_blocks``), over the
grid ``--k`` times full and diag:

* **one start** (the behaviour before issue 28): ``n_init=1, screen_size=None``,
  every candidate's k-means start and EM on all the rows;
* **default**: ``n_init=10`` starts per candidate screened on a 20,000-row
  sample, then each candidate's best fitted on all the rows from there.

Prints a markdown table: seconds, EM iterations over all the data (the
longest candidate's: the batch makes that many passes), the pick, and the
ratio default / one start (issue 28 asks <= 1.5 at 5M rows). With
``--parquet DIR`` the data is written there first and read out-of-core.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import streammix as sm
from streammix.datasets import mixture_blocks


def grid(text: str) -> list[int]:
    low, high = sorted(int(end) for end in text.split(".."))
    return list(range(low, high + 1))


def run(data, ks, **options):
    began = time.perf_counter()
    with warnings.catch_warnings():  # the edge and convergence warnings are not the point
        warnings.simplefilter("ignore")
        result = sm.select(data, n_components=ks, covariance_types=["full", "diag"],
                           random_state=0, **options)
    seconds = time.perf_counter() - began
    longest = max(row["n_iter"] for row in result.table)
    best = f"{result.best_.n_components} {result.best_.covariance_type}"
    return seconds, longest, best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=6)
    parser.add_argument("--k", default="2..12")
    parser.add_argument("--parquet", help="write the data here and select out-of-core")
    args = parser.parse_args()
    ks = grid(args.k)
    if args.parquet:
        sm.datasets.write_parquet(args.parquet, args.rows, args.features, args.components,
                                  seed=0)
        data = args.parquet
    else:
        data = np.concatenate([X for X, _ in mixture_blocks(
            args.rows, args.features, args.components, seed=0)])
    run(data, ks[:2], n_init=1, screen_size=None)  # warm up: compiled kernels, threads
    old = run(data, ks, n_init=1, screen_size=None)
    new = run(data, ks)
    print(f"{args.rows:,} rows x {args.features} features ({args.components} true "
          f"components), k {ks[0]}..{ks[-1]} x (full, diag) = {2 * len(ks)} candidates, "
          f"{'Parquet' if args.parquet else 'in memory'}\n")
    print("| select | seconds | EM passes over all rows | pick |")
    print("|---|---:|---:|---|")
    print(f"| one start (n_init=1, no screening) | {old[0]:.1f} | {old[1]} | {old[2]} |")
    print(f"| default (n_init=10, screened on 20,000 rows) | {new[0]:.1f} | {new[1]} | "
          f"{new[2]} |")
    print(f"\nratio default / one start: {new[0] / old[0]:.2f}")


if __name__ == "__main__":
    main()
