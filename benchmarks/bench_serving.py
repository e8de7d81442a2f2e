"""Benchmark: the scoring service over HTTP and Redis Streams, on 127.0.0.1.

Run:  .venv/bin/python benchmarks/bench_serving.py [--records 50000]

A GaussianMixture (K=16, 16 features, calibrated) served by the real
components, each in its own process, with and without explanations:

* HTTP (``streammix serve --http``): throughput with arrays of 1,000 records a
  request, and the latency of one-record requests (p50, p99, over 2,000
  requests one after the other);
* Redis (``streammix serve --redis``, a redis-server started here):
  throughput draining ``--records`` entries, and the latency of entries added
  at 500 a second (from the input entry's id to its output entry's id: both
  are Redis's clock, in milliseconds).

Every run also checks there was no error: every status 200, one output per
input entry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
STREAMMIX = os.path.join(os.path.dirname(sys.executable), "streammix")
D, K = 16, 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url, body: bytes) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        return answer.read()


def bench_http(model, rows, explain):
    port = free_port()
    server = subprocess.Popen([STREAMMIX, "serve", model, "--http", f"127.0.0.1:{port}",
                               "--max-body-bytes", str(64 << 20),
                               "--explain" if explain else "--no-explain"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        names = [f"x{j}" for j in range(D)]
        records = [dict(zip(names, map(float, row), strict=True)) for row in rows]
        bodies = [json.dumps(records[i : i + 1000]).encode()
                  for i in range(0, len(records), 1000)]
        post(f"{url}/score", bodies[0])  # warm up
        began = time.perf_counter()
        scored = sum(len(json.loads(post(f"{url}/score", body))) for body in bodies)
        throughput = scored / (time.perf_counter() - began)
        latencies = []
        for record in records[:2000]:
            began = time.perf_counter()
            post(f"{url}/score", json.dumps(record).encode())
            latencies.append(time.perf_counter() - began)
        return throughput, *np.percentile(latencies, [50, 99]) * 1000
    finally:
        server.terminate()
        server.wait(timeout=20)


def bench_redis(model, rows, explain, tmp):
    import redis

    port = free_port()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                               "--dir", tmp, "--save", ""], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    consumer = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        names = [f"x{j}" for j in range(D)]
        pipe = client.pipeline()
        for i, row in enumerate(rows):
            pipe.xadd("in", {"id": i, **dict(zip(names, map(float, row), strict=True))})
        pipe.execute()
        consumer = subprocess.Popen([STREAMMIX, "serve", model, "--redis",
                                     f"redis://127.0.0.1:{port}/0", "--stream", "in",
                                     "--output", "out", "--batch", "1000",
                                     "--explain" if explain else "--no-explain"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = None
        while client.xlen("out") < len(rows):  # the drain, from its first output on
            if started is None and client.xlen("out"):
                started = (time.perf_counter(), client.xlen("out"))
            time.sleep(0.01)
        throughput = (len(rows) - started[1]) / (time.perf_counter() - started[0])
        assert client.xlen("out") == len(rows) and client.xpending("in", "streammix")[
            "pending"] == 0
        sent = []
        for row in rows[:2000]:  # a trickle of 500 entries a second
            sent.append(client.xadd("in", {"id": -1, **dict(zip(names, map(float, row),
                                                                  strict=True))}))
            time.sleep(0.002)
        while client.xlen("out") < len(rows) + len(sent):
            time.sleep(0.01)
        out = {fields[b"entry"]: entry for entry, fields in
               client.xrange("out", "-", "+", count=len(rows) + len(sent))}
        latencies = [int(out[entry].split(b"-")[0]) - int(entry.split(b"-")[0])
                     for entry in sent]
        return throughput, *np.percentile(latencies, [50, 99])
    finally:
        if consumer is not None:
            consumer.terminate()
            consumer.wait(timeout=20)
        server.terminate()
        server.wait(timeout=20)


def main():
    import streammix as sm
    from streammix.datasets import mixture_blocks

    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    X = np.concatenate([x for x, _ in mixture_blocks(200_000, D, K, seed=5)])
    model = sm.GaussianMixture(K, max_iter=5, random_state=0).fit(X[:100_000])
    rows = X[100_000 : 100_000 + args.records]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        sm.AnomalyScorer(model, contamination=0.01).fit(X[:100_000]).save(path)
        print(f"\n## Serving, {D} features, K={K}, 127.0.0.1, {os.cpu_count()} cores\n")
        print("| path | explanations | records/s | p50 | p99 |")
        print("|---|---|---:|---:|---:|")
        for explain in (True, False):
            throughput, p50, p99 = bench_http(path, rows, explain)
            print(f"| HTTP (1,000-record arrays; latency: 1-record requests) | "
                  f"{'yes' if explain else 'no'} | {throughput:,.0f} | {p50:.1f} ms | "
                  f"{p99:.1f} ms |", flush=True)
        if shutil.which("redis-server"):
            for explain in (True, False):
                throughput, p50, p99 = bench_redis(path, rows, explain, tmp)
                print(f"| Redis Streams (batches of 1,000; latency: 500 entries/s, "
                      f"ms of Redis's clock) | {'yes' if explain else 'no'} | "
                      f"{throughput:,.0f} | {p50:.0f} ms | {p99:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
