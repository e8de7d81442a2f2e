"""Simulated streams against the adaptive scorer: poisoning, anomaly rates, degenerate
runs and a real drift, static and adaptive side by side in one table.

Run:  .venv/bin/python scripts/sim_drift.py [docs/images/adaptive-stream.png]

The model: 3 Gaussian components in 3-D (sd 1, centres 8 sd apart), fitted and
calibrated at contamination 1 % on 6,000 rows. Each stream is scored by the
static scorer and by the adaptive one (``window=2000``):

* ``poisoning 5 %`` / ``2 %``: that share of the traffic is anomalies creeping
  from 2 sd off a component to 14 sd, one direction, over the stream. Recall,
  and the share of the end point (12 sd and beyond) flagged.
* ``anomalies 1 % / 5 % / 10 % / 20 %``: injected anomalies 5-9 sd from a
  component at that share of the traffic (1 % and more is at or above the
  contamination), then a +4 sd shift of every component half-way. Recall of
  the injected anomalies, and the flag rate of normal records once the shift
  was relearnt.
* ``identical run``: 3,000 copies of one record, then 2,000 normal records: the
  flag rate of those, and the degenerate updates refused.
* ``real drift``: a +4 sd shift half-way, no anomalies: when the alarm fired and
  the flag rate of normal records one window after it.
* ``breast cancer``: scikit-learn's data, a 2-component diagonal mixture fitted
  and calibrated (5 %) on 250 benign rows; a stream of the other benign rows
  and malignant ones at 5, 10 and 20 % (drawn with replacement, a little noise).

The tests (tests/test_adaptive_threats.py) assert on these numbers.
"""

from __future__ import annotations

import os
import sys

import numpy as np

CENTRES = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
CONTAMINATION, WINDOW = 0.01, 2000


def draw(rng, n, shift=0.0):
    labels = rng.integers(0, 3, n)
    return CENTRES[labels] + shift / np.sqrt(3) + rng.normal(size=(n, 3))


def calibrated(seed=99):
    import streammix as sm

    train = draw(np.random.default_rng(seed), 6000)
    model = sm.GaussianMixture(3, random_state=0).fit(train)
    return sm.AnomalyScorer(model, contamination=CONTAMINATION).fit(train)


def _records(X):
    return [{"id": i, **{f"x{j}": v for j, v in enumerate(row)}}
            for i, row in enumerate(X.tolist())]


def run(scorer, X, **options):
    """(static flags, adaptive flags, adaptive outputs, the adaptive scorer)."""
    records = _records(X)
    static = np.array([o["anomaly"] for o in scorer.score_records(records)])
    adaptive = scorer.adapt(window=WINDOW, **options)
    outputs = list(adaptive.score_records(records))
    flags = np.array([o["anomaly"] for o in outputs if "score" in o])
    return static, flags, outputs, adaptive


def poisoning(scorer, share, n=30_000, seed=1):
    rng = np.random.default_rng(seed)
    X = draw(rng, n)
    bad = rng.random(n) < share
    direction = np.array([-1.0, -1.0, 1.0]) / np.sqrt(3)  # away from the other components
    distance = np.linspace(2, 14, n)[bad]
    X[bad] = CENTRES[0] + distance[:, None] * direction + 0.3 * rng.normal(size=(bad.sum(), 3))
    static, adaptive, _, _ = run(scorer, X)
    end = distance >= 12
    return {"recall static": static[bad].mean(), "recall adaptive": adaptive[bad].mean(),
            "end point static": static[bad][end].mean(),
            "end point adaptive": adaptive[bad][end].mean(),
            "normal flagged adaptive": adaptive[~bad].mean()}


def anomalies(scorer, share, n=20_000, seed=2, shift=4.0):
    rng = np.random.default_rng(seed)
    half = n // 2
    X = np.concatenate([draw(rng, half), draw(rng, n - half, shift)])
    bad = rng.random(n) < share
    direction = rng.normal(size=(bad.sum(), 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    moved = (np.arange(n) >= half)[bad, None] * shift / np.sqrt(3)
    X[bad] = CENTRES[rng.integers(0, 3, bad.sum())] + moved + \
        rng.uniform(5, 9, (bad.sum(), 1)) * direction
    static, adaptive, outputs, scoring = run(scorer, X)
    settled = np.arange(n) >= half + 2 * WINDOW + 1000  # the shift relearnt
    return {"recall static": static[bad].mean(), "recall adaptive": adaptive[bad].mean(),
            "normal flagged after": adaptive[settled & ~bad].mean(),
            "lowest threshold": min(o["threshold"] for o in outputs if "threshold" in o),
            "relearns": scoring.relearns}


def identical_run(scorer, n_run=3000, n_after=2000, seed=3):
    rng = np.random.default_rng(seed)
    X = np.concatenate([draw(rng, 2000), np.repeat(CENTRES[:1] + 0.1, n_run, axis=0),
                        draw(rng, n_after)])
    static, adaptive, _, scoring = run(scorer, X)
    after = slice(2000 + n_run, None)
    return {"normal flagged after static": static[after].mean(),
            "normal flagged after adaptive": adaptive[after].mean(),
            "refused updates": scoring.refused_updates}


def real_drift(scorer, n=20_000, seed=4, shift=4.0):
    rng = np.random.default_rng(seed)
    half = n // 2
    X = np.concatenate([draw(rng, half), draw(rng, n - half, shift)])
    static, adaptive, outputs, scoring = run(scorer, X)
    alarms = [o["record"] for o in outputs if o.get("event") == "drift"]
    first = next((a for a in alarms if a > half), None)
    after = adaptive[first + WINDOW + 256:] if first else adaptive[half:]
    return {"alarm after the shift": None if first is None else first - half,
            "normal flagged one window after the alarm": after.mean(),
            "static flagged after the shift": static[half:].mean(),
            "relearns": scoring.relearns}


def breast_cancer(share, seed=5, n=6000):
    from sklearn.datasets import load_breast_cancer

    import streammix as sm

    data = load_breast_cancer()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    rng = np.random.default_rng(seed)
    benign, malignant = X[data.target == 1], X[data.target == 0]
    order = rng.permutation(len(benign))
    train, held = benign[order[:250]], benign[order[250:]]
    model = sm.GaussianMixture(2, covariance_type="diag", random_state=0).fit(train)
    scorer = sm.AnomalyScorer(model, contamination=0.05).fit(train)
    bad = rng.random(n) < share
    stream = np.where(bad[:, None], malignant[rng.integers(0, len(malignant), n)],
                      held[rng.integers(0, len(held), n)])
    stream = stream + 0.05 * rng.normal(size=stream.shape)
    static, adaptive, _, _ = run(scorer, stream)
    return {"recall static": static[bad].mean(), "recall adaptive": adaptive[bad].mean()}


def all_streams():
    """Every stream's numbers, by name."""
    scorer = calibrated()
    results = {f"poisoning {s:.0%}": poisoning(scorer, s) for s in (0.05, 0.02)}
    results.update({f"anomalies {s:.0%} + shift": anomalies(scorer, s)
                    for s in (0.01, 0.05, 0.10, 0.20)})
    results["identical run"] = identical_run(scorer)
    results["real drift"] = real_drift(scorer)
    results.update({f"breast cancer {s:.0%}": breast_cancer(s) for s in (0.05, 0.10, 0.20)})
    return results


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    results = all_streams()
    print("| stream | measure | value |\n|---|---|---:|")
    for name, numbers in results.items():
        for measure, value in numbers.items():
            text = f"{value:.1%}" if isinstance(value, float) and abs(value) <= 1 else \
                f"{value:,.2f}" if isinstance(value, float) else f"{value}"
            print(f"| {name} | {measure} | {text} |")
    if len(sys.argv) > 1:
        from streammix.plotting import plot_stream

        scorer = calibrated()
        rng = np.random.default_rng(2)
        X = np.concatenate([draw(rng, 10_000), draw(rng, 10_000, 4.0)])
        _, _, outputs, _ = run(scorer, X)
        plot_stream(outputs, sys.argv[1], title="adaptive scoring: a +4 sd shift at record "
                                                "10,000 (window=2000, contamination 1 %)")
        print(f"\nwrote {sys.argv[1]}")


if __name__ == "__main__":
    main()
