"""Benchmark: the scoring service over HTTP and Redis Streams, on 127.0.0.1.

Run:  .venv/bin/python scripts/bench_serving.py [--records 100000]

A GaussianMixture (K=16, 16 features, calibrated), with and without
explanations, measured in one process run:

* in-process: ``AnomalyScorer.score_batch`` on JSON texts, in micro-batches of
  1,000, against ``json.loads`` (and orjson) of the same texts alone — the
  share of the JSON parsing rate the whole record path keeps;
* HTTP (``streammix serve --http``, its own process): throughput with arrays
  of 1,000 records a request from two client threads on keep-alive
  connections; then the latency of the same requests sent at half that
  throughput (p50, p99);
* Redis (``streammix serve --redis``, a redis-server started here): the
  throughput of one consumer draining ``--records`` entries, then of two
  consumers; then the latency of entries added at half the one-consumer
  throughput (from the input entry's id to its output entry's id: both are
  Redis's clock, in milliseconds).

The machine is shared by the clients, the servers and Redis: 2 cores here.
Every run also checks there was no error: every status 200, one output per
input entry.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from _benchlib import best_time

STREAMMIX = os.path.join(os.path.dirname(sys.executable), "streammix")
D, K, BATCH = 16, 16, 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_in_process(scorer, texts):
    import orjson

    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    stdlib = len(texts) / best_time(lambda: [json.loads(t) for t in texts], 3)
    fast = len(texts) / best_time(lambda: [orjson.loads(t) for t in texts], 3)
    rows = []
    for explain in (True, False):
        rate = len(texts) / best_time(lambda explain=explain: [
            scorer.score_batch(b, explain=explain) for b in batches], 3)
        rows.append((explain, rate, stdlib, fast))
    return rows


class Client:
    """POSTs on one keep-alive connection."""

    def __init__(self, port):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, body: bytes) -> bytes:
        self.connection.request("POST", "/score", body, {"Content-Type": "application/json"})
        answer = self.connection.getresponse()
        data = answer.read()
        assert answer.status == 200, (answer.status, data[:200])
        return data


def bench_http(model, bodies, explain):
    import orjson

    port = free_port()
    server = subprocess.Popen([STREAMMIX, "serve", model, "--http", f"127.0.0.1:{port}",
                               "--max-body-bytes", str(64 << 20),
                               "--explain" if explain else "--no-explain"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        Client(port).post(bodies[0])  # warm up
        scored = [0, 0]

        def send(which):
            client = Client(port)
            for body in bodies[which::2]:
                scored[which] += len(orjson.loads(client.post(body)))  # the client's cost: low

        began = time.perf_counter()
        threads = [threading.Thread(target=send, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        throughput = sum(scored) / (time.perf_counter() - began)
        # the same requests at half that throughput, one at a time on a schedule
        interval, client, latencies = 2 * BATCH / throughput, Client(port), []
        start = time.perf_counter()
        for n, body in enumerate(bodies):
            time.sleep(max(0.0, start + n * interval - time.perf_counter()))
            began = time.perf_counter()
            client.post(body)
            latencies.append(time.perf_counter() - began)
        return throughput, *np.percentile(latencies, [50, 99]) * 1000
    finally:
        server.terminate()
        server.wait(timeout=20)


def _consumer(model, port, name, explain):
    return subprocess.Popen([STREAMMIX, "serve", model, "--redis", f"redis://127.0.0.1:{port}/0",
                             "--stream", "in", "--output", "out", "--batch", str(BATCH),
                             "--consumer", name, "--explain" if explain else "--no-explain"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _drain(client, fields, consumers_of):
    """Entries/s of the consumers ``consumers_of()`` starts, draining ``fields``."""
    client.delete("in", "out")
    pipe = client.pipeline(transaction=False)
    for n, entry in enumerate(fields):
        pipe.xadd("in", entry)
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    consumers = consumers_of()
    try:
        started = None
        while client.xlen("out") < len(fields):  # the drain, from its first output on
            if started is None and client.xlen("out"):
                started = (time.perf_counter(), client.xlen("out"))
            time.sleep(0.005)
        throughput = (len(fields) - started[1]) / (time.perf_counter() - started[0])
        assert client.xlen("out") == len(fields)
        assert client.xpending("in", "streammix")["pending"] == 0
        return throughput, consumers
    except BaseException:
        for consumer in consumers:
            consumer.terminate()
        raise


def bench_redis(model, rows, explain, tmp):
    import redis

    port = free_port()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                               "--dir", tmp, "--save", ""], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    consumers = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        names = [f"x{j}" for j in range(D)]
        fields = [{"id": i, **dict(zip(names, map(float, row), strict=True))}
                  for i, row in enumerate(rows)]
        one, consumers = _drain(client, fields, lambda: [_consumer(model, port, "a", explain)])
        for consumer in consumers:
            consumer.terminate()
            consumer.wait(timeout=20)
        two, consumers = _drain(client, fields, lambda: [
            _consumer(model, port, name, explain) for name in ("a", "b")])
        for consumer in consumers[1:]:
            consumer.terminate()
            consumer.wait(timeout=20)
        consumers = consumers[:1]
        # latency at half the one-consumer throughput: 100 entries every 200/one seconds
        sent, total = [], len(fields)
        burst, interval = 100, 200 / one
        start = time.perf_counter()
        for n in range(0, min(len(fields), int(one * 3)), burst):
            time.sleep(max(0.0, start + (n // burst) * interval - time.perf_counter()))
            pipe = client.pipeline(transaction=False)
            for entry in fields[n : n + burst]:
                pipe.xadd("in", entry)
            sent += pipe.execute()
        while client.xlen("out") < total + len(sent):
            time.sleep(0.01)
        out = {f[b"entry"]: entry for entry, f in client.xrange("out", "-", "+")
               if b"entry" in f}
        latencies = [int(out[e].split(b"-")[0]) - int(e.split(b"-")[0]) for e in sent]
        return one, two, *np.percentile(latencies, [50, 99])
    finally:
        for consumer in consumers:
            consumer.terminate()
            consumer.wait(timeout=20)
        server.terminate()
        server.wait(timeout=20)


def main():
    import streammix as sm
    from streammix.datasets import mixture_blocks

    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    X = np.concatenate([x for x, _ in mixture_blocks(100_000 + args.records, D, K, seed=5)])
    model = sm.GaussianMixture(K, max_iter=5, random_state=0).fit(X[:100_000])
    scorer = sm.AnomalyScorer(model, contamination=0.01).fit(X[:100_000])
    rows = X[100_000 : 100_000 + args.records]
    names = [f"x{j}" for j in range(D)]
    records = [{"id": i, **dict(zip(names, map(float, row), strict=True))}
               for i, row in enumerate(rows)]
    texts = [json.dumps(r) for r in records[:50_000]]
    bodies = [json.dumps(records[i : i + BATCH]).encode() for i in range(0, len(records), BATCH)]
    print(f"\n## Serving, {D} features, K={K}, 127.0.0.1, {os.cpu_count()} cores\n")
    print("| in-process, micro-batches of 1,000 JSON texts | explanations | records/s | "
          "json.loads/s | share of json.loads | orjson.loads/s |")
    print("|---|---|---:|---:|---:|---:|")
    for explain, rate, stdlib, fast in bench_in_process(scorer, texts):
        print(f"| score_batch | {'yes' if explain else 'no'} | {rate:,.0f} | {stdlib:,.0f} | "
              f"{rate / stdlib:.0%} | {fast:,.0f} |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        scorer.save(path)
        print("\n| HTTP, arrays of 1,000 records | explanations | records/s (2 clients) | "
              "p50 at half load | p99 at half load |")
        print("|---|---|---:|---:|---:|")
        for explain in (True, False):
            throughput, p50, p99 = bench_http(path, bodies, explain)
            print(f"| POST /score | {'yes' if explain else 'no'} | {throughput:,.0f} | "
                  f"{p50:.1f} ms | {p99:.1f} ms |", flush=True)
        if shutil.which("redis-server"):
            print("\n| Redis Streams, batches of 1,000 | explanations | entries/s, 1 consumer | "
                  "2 consumers | p50 at half load | p99 at half load |")
            print("|---|---|---:|---:|---:|---:|")
            for explain in (True, False):
                one, two, p50, p99 = bench_redis(path, rows, explain, tmp)
                print(f"| serve --redis | {'yes' if explain else 'no'} | {one:,.0f} | "
                      f"{two:,.0f} | {p50:.0f} ms | {p99:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
