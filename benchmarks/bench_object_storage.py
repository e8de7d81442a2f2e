"""Benchmark: Parquet over a local S3 server (moto, 127.0.0.1) next to the local disk.

Run:  .venv/bin/python benchmarks/bench_object_storage.py [--rows 1000000] [--objects 200]

Prints, from one process run, side by side:
* planning (footers only) of ``--objects`` small objects, one at a time and
  with the footers read in parallel;
* a Lloyd iteration (k-means, 16 features, k=16) from the local disk and from
  S3: the first pass (every chunk read; measured as one ``score`` pass) and
  cached passes (``cache=True``: (12 - 2 iterations) / 10), with the server's
  GET requests per pass;
* writing every row's cluster (``predict`` to a folder, and to an S3 prefix:
  one part per chunk, then the commit), with the server's PUT requests;
* a checkpointed Lloyd iteration (cached data, ``checkpoint=`` in a folder and
  in the bucket) next to one without a checkpoint, with the requests a
  checkpoint makes per iteration.

moto is a Python server on the same two cores, so its absolute throughput is
far below a real object store's; the comparison shows what streammix adds
(requests per pass, what the cache saves), not S3's speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

from _benchlib import per_iteration

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import streammix as sm
from streammix.io import storage
from streammix.scoring import predict_to_parquet
from tests._s3 import start_s3

K = 16


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=200)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        server = start_s3(os.path.join(tmp, "moto.log"))
        try:
            run(server, tmp, args)
        finally:
            server.stop()


def run(server, tmp, args):
    from streammix.datasets import write_parquet

    fs = server.filesystem()
    fs.mkdir("bench-small")
    small = write_parquet(os.path.join(tmp, "small"), 1000 * args.objects, 4, 2,
                          row_group_rows=1000, files=args.objects)
    fs.put(os.path.join(tmp, "small") + "/", "bench-small/", recursive=True)
    print(f"Planning {args.objects} objects (footers only), seconds")
    for threads in (1, storage.PLANNING_THREADS):
        storage.PLANNING_THREADS = threads
        began = time.perf_counter()
        source = sm.read_parquet("s3://bench-small/", storage_options=server.options)
        print(f"  {threads:>2} at a time: {time.perf_counter() - began:6.2f}  "
              f"({len(source.files)} objects)")
    assert len(small) == args.objects

    fs.mkdir("bench-data")
    local = os.path.join(tmp, "data")
    write_parquet(local, args.rows, 16, K, row_group_rows=125_000, files=8)
    fs.put(local + "/", "bench-data/", recursive=True)
    print(f"\nLloyd iteration, {args.rows:,} x 16, k={K}, 8 objects, seconds")
    print(f"{'data':<10}{'first pass':>12}{'cached pass':>13}{'GETs/pass':>11}")
    for where, path, options in (("disk", local, None),
                                 ("S3", "s3://bench-data/", server.options)):
        data = sm.read_parquet(path, storage_options=options)
        init = data.read_chunk(data.plan()[0]).__next__()[1][:K]
        model = sm.KMeans(K, init=init, n_init=1, max_iter=1, cache=False).fit(data)
        before = _gets(server, "bench-data")
        began = time.perf_counter()
        model.score(data)  # one pass, every chunk read
        first = time.perf_counter() - began
        gets = _gets(server, "bench-data") - before

        def fit(n, data=data, init=init):
            return sm.KMeans(K, init=init, n_init=1, max_iter=n, tol=0, cache=True).fit(
                data).n_iter_

        cached = per_iteration(fit, trials=2)
        print(f"{where:<10}{first:>12.3f}{cached:>13.3f}{gets if options else '-':>11}")

    print("\nWriting every row's cluster (predict), seconds")
    print(f"{'to':<10}{'seconds':>12}{'PUTs':>8}{'parts':>7}")
    fs.mkdir("bench-out")
    for where, path, out, options in (
            ("disk", local, os.path.join(tmp, "labels") + "/", None),
            ("S3", "s3://bench-data/", "s3://bench-out/labels/", server.options)):
        data = sm.read_parquet(path, storage_options=options)
        model = sm.KMeans(K, init=init, n_init=1, max_iter=1, storage_options=options).fit(data)
        before = _requests(server, "PUT", "bench-out")
        began = time.perf_counter()
        predict_to_parquet(model, data, out)
        seconds = time.perf_counter() - began
        puts = _requests(server, "PUT", "bench-out") - before
        print(f"{where:<10}{seconds:>12.3f}{puts if options else '-':>8}{len(data.plan()):>7}")

    print("\nCheckpointed Lloyd iteration (cached data), seconds per iteration")
    print(f"{'checkpoint':<12}{'iteration':>10}{'requests/iteration':>20}")
    data = sm.read_parquet(local)
    for where, ckpt in (("none", None), ("folder", os.path.join(tmp, "ckpt")),
                        ("S3", "s3://bench-out/ckpt/")):
        counts = []

        def fit(n, ckpt=ckpt, counts=counts):
            before = _requests(server, "", "bench-out/ckpt")
            target = None if ckpt is None else f"{ckpt}-{n}-{len(counts)}"
            model = sm.KMeans(K, init=init, n_init=1, max_iter=n, tol=0, checkpoint=target,
                              storage_options=server.options).fit(data)
            counts.append((n, _requests(server, "", "bench-out/ckpt") - before))
            return model.n_iter_

        seconds = per_iteration(fit, trials=2)
        (n1, r1), (n2, r2) = counts[-2:] if counts[-1][0] > counts[-2][0] else counts[-2:][::-1]
        per = (r2 - r1) / (n2 - n1) if where == "S3" else "-"
        print(f"{where:<12}{seconds:>10.3f}{per:>20}")


def _gets(server, bucket) -> int:
    return _requests(server, "GET", bucket)


def _requests(server, method, prefix) -> int:
    """Requests of ``method`` (any, if empty) the server answered under ``prefix``."""
    with open(server.log_path) as log:
        return sum(f"{method} /{prefix}" in line if method else f" /{prefix}" in line
                   for line in log)


if __name__ == "__main__":
    main()
