"""Simulated drifts for the adaptive scorer: recovery, anomalies caught, slow poisoning.

Run:  .venv/bin/python benchmarks/sim_drift.py [docs/images/adaptive-stream.png]

The streams of tests/test_adaptive.py (3 Gaussian components in 3-D, a model
fitted and calibrated at contamination 2 % on 6,000 rows before the stream):

1. 24,000 records whose components all move by 6 sd half-way, 1 % injected
   anomalies 9 sd from a component: the static scorer against the adaptive
   one (``window=2000``), per block of 2,000 records: the rate of flagged
   normal records and the share of injected anomalies caught; when the drift
   alarm fired; how many records after the shift the flag rate was back
   within 2x the calibrated rate.
2. Slow poisoning: 20,000 records, 1 % anomalies walking from far away to a
   region 5 sd from every component: the share caught, overall and in the
   last tenth of the walk.

Writes the picture of the first stream (scores, threshold, drift alarm).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    import streammix as sm
    from streammix.plotting import plot_stream
    from tests.test_adaptive import draw, flagged, records, stream_with_shift

    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "docs", "images", "adaptive-stream.png")
    train = draw(np.random.default_rng(99), 6000)
    model = sm.GaussianMixture(3, random_state=0).fit(train)
    scorer = sm.AnomalyScorer(model, contamination=0.02).fit(train)

    X, injected, half = stream_with_shift()
    static = flagged(scorer.score_records(records(X)))
    outputs = list(scorer.adapt(window=2000).score_records(records(X)))
    adaptive = flagged(outputs)
    print("## A 6-sd shift at record 12,000; contamination 2 %, 1 % injected anomalies\n")
    print("| records | static: normal flagged | static: anomalies caught | "
          "adaptive: normal flagged | adaptive: anomalies caught |")
    print("|---|---:|---:|---:|---:|")
    for first in range(0, len(X), 2000):
        block = slice(first, first + 2000)
        normal, bad = ~injected[block], injected[block]
        print(f"| {first:,}-{first + 1999:,} | {static[block][normal].mean():.1%} | "
              f"{static[block][bad].mean():.0%} | {adaptive[block][normal].mean():.1%} | "
              f"{adaptive[block][bad].mean():.0%} |")
    alarms = [o["record"] for o in outputs if o.get("event") == "drift"]
    rate = np.convolve(adaptive, np.ones(500) / 500, mode="valid")  # over 500 records
    back = next(i for i in range(half, len(rate)) if rate[i] < 2 * 0.02) + 500 - half
    print(f"\ndrift alarm at record(s) {alarms}; the flag rate (over 500 records) is back "
          f"within 2x the calibrated 2 % {back:,} records after the shift; anomalies caught "
          f"during and after the shift: {adaptive[half:][injected[half:]].mean():.1%} "
          f"(static: {static[half:][injected[half:]].mean():.1%})")
    plot_stream(outputs, path, title="adaptive scoring: a 6-sd shift at record 12,000 "
                                     "(window=2000, contamination 2 %, 1 % injected anomalies)")
    print(f"wrote {path}")

    rng = np.random.default_rng(5)
    n = 20_000
    Y = draw(rng, n)
    poison = rng.random(n) < 0.01
    target, start = np.array([4.0, 4.0, 6.0]), np.array([20.0, 20.0, 20.0])
    progress = np.linspace(0, 1, poison.sum())[:, None]
    Y[poison] = start + progress * (target - start) + 0.3 * rng.normal(size=(poison.sum(), 3))
    caught = flagged(scorer.adapt(window=2000).score_records(records(Y)))[poison]
    last = caught[-len(caught) // 10:]
    print(f"\n## Slow poisoning: {poison.sum()} anomalies walking to a region 5 sd from "
          f"every component\n\ncaught: {caught.mean():.1%} overall, {last.mean():.1%} of the "
          "last tenth (at the target)")


if __name__ == "__main__":
    main()
