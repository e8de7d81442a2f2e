"""Cost of page-checksum verification on streammix's Parquet reads (interleaved trials).

Run: .venv/bin/python benchmarks/bench_checksums.py (2M rows x 16 float64, page cache warm).
"""
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streammix as sm

X = np.random.default_rng(0).normal(size=(2_000_000, 16))
table = pa.table({f"x{j}": X[:, j] for j in range(16)})
for name, ck in [("plain", False), ("checksums", True)]:
    pq.write_table(table, f"/tmp/streammix-bench-{name}.parquet", row_group_size=250_000,
                   use_dictionary=False, write_page_checksum=ck)

def one_pass(path):
    src = sm.read_parquet(path)
    plan = src.plan()
    def read(chunk):
        return sum(float(b.sum()) for _, b in src.read_chunk(chunk))
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(read, plan))
    return X.nbytes / (time.perf_counter() - t) / 1e9

times = {"plain": [], "checksums": []}
for _ in range(7):
    for name in times:
        times[name].append(one_pass(f"/tmp/streammix-bench-{name}.parquet"))
for name, v in times.items():
    print(f"{name:10s} best {max(v):.2f} GB/s  median {statistics.median(v):.2f} GB/s")
print("ratio (median, verified/plain):",
      round(statistics.median(times["checksums"]) / statistics.median(times["plain"]), 2))
