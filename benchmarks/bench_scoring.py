"""Benchmark: anomaly scoring throughput and per-record latency.

Run:  .venv/bin/python benchmarks/bench_scoring.py

1. In-memory ``score_samples`` throughput (rows/s), d=16, K=16, full
   covariance, streammix and scikit-learn on the same model in this run.
2. JSON-lines stream throughput (records/s): the ``streammix score MODEL -``
   command on a file of records (static, with the drift alarm, and with
   ``--adapt``), and in process: ``AnomalyScorer.score_records``
   static, with the drift alarm only, and adapting.
3. Per-record latency at a low arrival rate (200 records/s, one at a time):
   time from a record's arrival to its output, p50 and p99, static and adapting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

D, K = 16, 16


def main():
    from sklearn.mixture import GaussianMixture as SkGMM

    import streammix as sm
    from streammix.datasets import mixture_blocks

    X = np.concatenate([x for x, _ in mixture_blocks(1_000_000, D, K, seed=5)])
    model = sm.GaussianMixture(K, max_iter=5, random_state=0).fit(X[:100_000])
    scorer = sm.AnomalyScorer(model, contamination=0.01).fit(X[:100_000])
    sk = SkGMM(K, max_iter=1).fit(X[:2000])
    sk._set_parameters((model.weights_, model.means_, model.covariances_,
                        model.precisions_cholesky_))
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores")
    print(f"\n## score_samples, in memory: {len(X):,} x {D}, K={K}, full\n")
    print("| implementation | seconds | rows/s | streammix speed-up |")
    print("|---|---:|---:|---:|")
    model.score_samples(X[:1000])
    began = time.perf_counter()
    ours = model.score_samples(X)
    t_ours = time.perf_counter() - began
    began = time.perf_counter()
    theirs = sk.score_samples(X)
    t_sk = time.perf_counter() - began
    assert np.allclose(ours, theirs, rtol=1e-9)
    print(f"| streammix | {t_ours:.3f} | {len(X) / t_ours:,.0f} | {t_sk / t_ours:.2f} |")
    print(f"| scikit-learn | {t_sk:.3f} | {len(X) / t_sk:,.0f} | 1.00 |")

    n = 200_000
    names = [f"x{j}" for j in range(D)]
    lines = [json.dumps({"id": i, **dict(zip(names, map(float, row), strict=True))})
             for i, row in enumerate(X[:n])]
    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "m.npz")
        scorer.save(model_path)
        records = os.path.join(tmp, "records.jsonl")
        with open(records, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        command = [os.path.join(os.path.dirname(sys.executable), "streammix"), "score",
                   model_path, "-", "--micro-batch", "1024"]
        t_cli = {}
        for name, extra in (("(static, the default)", []), ("--drift", ["--drift"]),
                            ("--adapt", ["--adapt"])):
            began = time.perf_counter()
            with open(records) as stdin:
                done = subprocess.run(command + extra, stdin=stdin, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
            t_cli[name] = time.perf_counter() - began
            assert done.returncode == 0, done.stderr
    print(f"\n## JSON-lines stream, {n:,} records of {D} fields\n")
    print("| path | seconds | records/s |")
    print("|---|---:|---:|")
    for name, seconds in t_cli.items():
        print(f"| `streammix score MODEL -` {name} (process start included) | {seconds:.2f} | "
              f"{n / seconds:,.0f} |")
    for name, scoring in (("static", scorer), ("drift alarm only", scorer.adapt(adapt=False)),
                          ("adapting", scorer.adapt())):
        began = time.perf_counter()
        count = sum("score" in out for out in scoring.score_records(lines, batch_size=1024))
        seconds = time.perf_counter() - began
        assert count == n
        print(f"| `score_records` on JSON texts, {name} | {seconds:.2f} | {n / seconds:,.0f} |")

    rate, total = 200.0, 400
    print(f"\n## Latency at {rate:.0f} records/s, max_latency_ms=5\n")
    print("| scoring | p50 | p99 |")
    print("|---|---:|---:|")
    for name, scoring in (("static", scorer), ("adapting", scorer.adapt())):
        arrivals = {}

        def trickle(arrivals=arrivals):
            for i, line in enumerate(lines[:total]):
                time.sleep(1 / rate)
                arrivals[i] = time.perf_counter()
                yield line

        latencies = [time.perf_counter() - arrivals[out["id"]] for out in
                     scoring.score_records(trickle(), batch_size=256, max_latency_ms=5)
                     if "score" in out]
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms |")


if __name__ == "__main__":
    main()
