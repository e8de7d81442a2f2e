"""Benchmark: GaussianMixture EM against scikit-learn, and peak memory out-of-core.

Run:  .venv/bin/python benchmarks/bench_gmm.py [--rows 1000000] [--ooc-rows 20000000]

Prints markdown tables (they go into docs/performance.md):

1. Seconds per EM iteration in memory (rows x 16 features, K=16) for each
   covariance type, streammix and scikit-learn measured in this one run, and
   their ratio. scikit-learn is timed on its own E-step + M-step (no init).
2. ``--iter-rows``: seconds per out-of-core EM iteration over Parquet, with and
   without the chunk cache, against the read-and-decode time (cold and warm
   page cache) and the in-memory compute time.
3. ``--ooc-rows``: peak RSS of a fit over a Parquet dataset of that many rows
   x 16 float64 and of twice that, each fit in a fresh process.

Times are the best of a few trials: on a shared machine noise only adds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from operator import add

import numpy as np
from _benchlib import best_time as per_iteration
from _benchlib import per_iteration as fit_per_iteration

K, D = 16, 16


def start(X, kind, rng):
    precisions = {"full": np.tile(np.eye(D), (K, 1, 1)), "tied": np.eye(D),
                  "diag": np.ones((K, D)), "spherical": np.ones(K)}[kind]
    means = X[rng.choice(len(X), K, replace=False)]
    return {"weights_init": np.full(K, 1 / K), "means_init": means,
            "precisions_init": precisions * 0.05, "covariance_type": kind}


def in_memory(rows, repeats):
    from sklearn.mixture import GaussianMixture as SkGMM

    import streammix as sm
    from streammix.datasets import mixture_blocks

    X = np.concatenate([x for x, _ in mixture_blocks(rows, D, K, seed=1)])
    rng = np.random.default_rng(0)
    print(f"\n## EM iteration, in memory: {rows:,} x {D}, K={K}, float64, 2 cores\n")
    print("| covariance | streammix s/iter | scikit-learn s/iter | ratio |")
    print("|---|---:|---:|---:|")
    for kind in ("full", "tied", "diag", "spherical"):
        init = start(X, kind, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_ours = fit_per_iteration(
                lambda n, init=init: sm.GaussianMixture(K, max_iter=n, tol=0, **init).fit(X)
                .n_iter_, short=1, long=1 + repeats)
            # A fitted scikit-learn model to step; the cost of a step does not
            # depend on the parameter values, so it is stepped repeatedly.
            sk = SkGMM(K, max_iter=1, tol=0, **init).fit(X[:5000])
            t_sk = per_iteration(lambda sk=sk: sk._m_step(X, sk._e_step(X)[1]), repeats)
        print(f"| {kind} | {t_ours:.3f} | {t_sk:.3f} | {t_ours / t_sk:.3f} |", flush=True)
    init = start(X, "full", rng)
    times = {"float64": [], "float32": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):  # interleaved, so that both see the same machine
            for dtype, seen in times.items():
                seen.append(fit_per_iteration(
                    lambda n, dtype=dtype: sm.GaussianMixture(K, max_iter=n, tol=0, dtype=dtype,
                                                              **init).fit(X).n_iter_,
                    short=1, long=1 + repeats, trials=1))
    t64, t32 = min(times["float64"]), min(times["float32"])
    ratios = [b / a for a, b in zip(times["float64"], times["float32"], strict=True)]
    print(f"| full, dtype=float32 | {t32:.3f} | (float64 again: {t64:.3f}) | "
          f"{t32 / t64:.3f} of float64 (trials: {', '.join(f'{r:.2f}' for r in ratios)}) |")
    gemm_float32_reference()


def gemm_float32_reference(repeats=3):
    """What this machine's BLAS gives float32 over float64 for the E-step's GEMM shape.

    (400 x 153) @ (153 x 16), the full-covariance E-step GEMM of one tile, on
    one thread and on two threads with one BLAS thread each, as the engine
    runs it: the float32 / float64 time ratio bounds what dtype="float32" can
    gain in a pass that is mostly GEMMs.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    def seconds(dtype, threads):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((400, 153)).astype(dtype)
        b = rng.standard_normal((153, 16)).astype(dtype)

        def work(_):
            for _ in range(2000):
                a @ b

        with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
            best = np.inf
            for _ in range(repeats):
                began = time.perf_counter()
                list(pool.map(work, range(4)))
                best = min(best, time.perf_counter() - began)
        return best

    print("\nBLAS alone, the E-step GEMM shape, float32 time / float64 time:")
    for threads in (1, 2):
        ratio = seconds(np.float32, threads) / seconds(np.float64, threads)
        print(f"- {threads} thread(s): {ratio:.2f}")


def peak_rss() -> int:
    """This process's peak resident set in bytes.

    ``VmHWM`` belongs to the address space, which exec replaces; ``ru_maxrss``
    would also count the parent's peak at fork time.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_fit(path, cache):
    """In a fresh process: fit, then report wall time and peak RSS as JSON."""
    import streammix as sm

    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sm.GaussianMixture(8, covariance_type="full", max_iter=3, tol=0,
                                   init_params="k-means++", random_state=0,
                                   cache={"auto": "auto", "off": False}[cache]).fit(path)
    peak = peak_rss()
    print(json.dumps({"seconds": time.perf_counter() - began, "peak_rss": peak,
                      "passes": model.n_iter_ + 1}))


def out_of_core(rows, workdir):
    from streammix.datasets import write_parquet

    print(f"\n## Peak RSS of a fit over Parquet ({D} float64 columns, K=8 full, "
          "k-means++ init + 3 EM iterations)\n")
    print("| rows | data size | chunk cache | peak RSS | wall time | s per pass |")
    print("|---:|---:|---|---:|---:|---:|")
    # Streaming (cache off) must stay flat; cache="auto" keeps the decoded rows
    # when they fit in half the available memory, so its peak is the data.
    for n, cache in ((rows, "off"), (2 * rows, "off"), (rows, "auto")):
        path = os.path.join(workdir, f"data-{n}")
        if not os.path.exists(path):
            write_parquet(path, n, D, 8, seed=2, row_group_rows=500_000,
                          files=max(1, n // 5_000_000))
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        out = subprocess.run([sys.executable, __file__, "--child", path, "--cache", cache],
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"| {n:,} | {size / 2**30:.2f} GiB | {cache} | "
              f"{result['peak_rss'] / 2**30:.2f} GiB | {result['seconds']:.1f} s | "
              f"{result['seconds'] / result['passes']:.1f} |", flush=True)


def _noop(params, block, start):
    return np.zeros(1)


def evict(path):
    """Drop a dataset's files from the page cache, so the next read is cold."""
    for name in os.listdir(path):
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def out_of_core_iteration(rows, workdir):
    """Per-iteration time over Parquet against read-and-decode and in-memory compute.

    Two copies of the same rows: as ``write_parquet`` writes them (snappy, no
    dictionary) and as pyarrow writes by default (dictionary pages first,
    snappy), the layout of most files from other writers.
    """
    import pyarrow.parquet as pq

    import streammix as sm
    from streammix.datasets import write_parquet
    from streammix.engine import Engine

    plain = os.path.join(workdir, f"iter-{rows}")
    if not os.path.exists(plain):
        write_parquet(plain, rows, D, K, seed=4, row_group_rows=250_000, files=4)
    dictionary = plain + "-dictionary"
    os.makedirs(dictionary, exist_ok=True)
    for name in sorted(os.listdir(plain)):
        if not os.path.exists(os.path.join(dictionary, name)):
            pq.write_table(pq.read_table(os.path.join(plain, name)),
                           os.path.join(dictionary, name), row_group_size=250_000)
    source = sm.read_parquet(plain)
    # Row-major, as in-memory data usually is (decoded Parquet blocks are column-major).
    X = np.ascontiguousarray(np.concatenate([b for c in source.plan()
                                             for _, b in source.read_chunk(c)]))
    init = start(X, "full", np.random.default_rng(0))

    def per_iteration(data, cache):
        def fit(n):
            began = time.perf_counter()
            sm.GaussianMixture(K, max_iter=n, tol=0, cache=cache, **init).fit(data)
            return time.perf_counter() - began
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(1)
            return min((fit(4) - fit(1)) / 3 for _ in range(2))

    def read_pass(engine, path):
        began = time.perf_counter()
        engine.map_reduce(_noop, None, sm.read_parquet(path), add)
        return time.perf_counter() - began

    compute = per_iteration(X, "auto")
    layouts = {}
    for label, path in (("streammix's files", plain), ("pyarrow defaults", dictionary)):
        with Engine(cache=False) as engine:
            evict(path)
            cold = read_pass(engine, path)
            read = min(read_pass(engine, path) for _ in range(3))
        layouts[label] = {
            "size": sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)),
            "cold": cold, "read": read, "arrow": min(arrow_decode(path) for _ in range(3)),
            "no cache": per_iteration(path, False), "cache": per_iteration(path, True)}

    print(f"\n## Out-of-core EM iteration over Parquet: {rows:,} x {D}, K={K}, full\n")
    print(f"In-memory compute: {compute:.3f} s per iteration (row-major rows). Ratios are "
          "to max(warm read, compute) of the same files.\n")
    print("| measure | " + " | ".join(f"{label} (s) | ratio" for label in layouts) + " |")
    print("|---|" + "---:|---:|" * len(layouts))

    def row(name, pick, ratio=True):
        cells = []
        for seen in layouts.values():
            value, bound = pick(seen), max(seen["read"], compute)
            cells.append(f"{value:.3f} | " + (f"{value / bound:.2f}" if ratio else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")

    row("read and decode, cold page cache", lambda seen: seen["cold"])
    row("read and decode, warm page cache", lambda seen: seen["read"], ratio=False)
    row("of which Arrow's decode alone (warm)", lambda seen: seen["arrow"], ratio=False)
    row("read + compute (both keep every core busy)", lambda seen: seen["read"] + compute)
    row("Arrow's decode + compute (nothing of ours)", lambda seen: seen["arrow"] + compute)
    row("out-of-core iteration, no cache", lambda seen: seen["no cache"])
    row("out-of-core iteration, chunk cache", lambda seen: seen["cache"])
    print("\nRead throughput (MiB/s), cold / warm: " + "; ".join(
        f"{label} {seen['size'] / 2**20 / seen['cold']:,.0f} / "
        f"{seen['size'] / 2**20 / seen['read']:,.0f}" for label, seen in layouts.items()))


def arrow_decode(path, threads=2):
    """Seconds for Arrow alone to decode every row group of ``path`` (warm), on
    ``threads`` threads as the engine's: the floor of any reader built on it."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    files = [os.path.join(path, name) for name in sorted(os.listdir(path))]
    groups = [(f, g) for f in files for g in range(pq.ParquetFile(f).num_row_groups)]

    def decode(group):
        pq.ParquetFile(group[0], memory_map=True).read_row_groups([group[1]], use_threads=False)

    with ThreadPoolExecutor(threads) as pool:
        began = time.perf_counter()
        list(pool.map(decode, groups))
        return time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ooc-rows", type=int, default=20_000_000, help="0 skips out-of-core")
    parser.add_argument("--iter-rows", type=int, default=2_000_000,
                        help="rows of the out-of-core iteration table; 0 skips it")
    parser.add_argument("--workdir", default=None, help="where the Parquet data goes (kept)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_fit(args.child, args.cache)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores")
    if args.rows:
        in_memory(args.rows, args.repeats)
    if args.iter_rows:
        with tempfile.TemporaryDirectory(prefix="streammix-bench-") as workdir:
            out_of_core_iteration(args.iter_rows, workdir)
    if args.ooc_rows:
        workdir = args.workdir or tempfile.mkdtemp(prefix="streammix-bench-")
        try:
            out_of_core(args.ooc_rows, workdir)
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
