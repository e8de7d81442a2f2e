"""Benchmark: false-positive rate on held-out normal records, threshold calibrated on
the training rows against calibrated on a held-out share of them (issue 28.3).

Run:  .venv/bin/python benchmarks/calibration_fpr.py [--seeds 10]

Data: scikit-learn's breast cancer set, its benign records (357 x 30) as the normal
ones, standardised on the training rows. For each seed, 70 % of them train and 30 %
are new normal records. Model: GaussianMixture(3, covariance_type="full"),
contamination 0.05. "train" calibrates on the training rows; "holdout" fits on 80 %
of them and calibrates on the other 20 % (``calibration="holdout"``). The table gives
the share of the new normal records each threshold flags: 0.05 is right.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

CONTAMINATION, K, TRAIN_SHARE, HOLDOUT = 0.05, 3, 0.7, 0.2


def flagged(X_train, X_new, calibration, seed) -> float:
    import streammix as sm

    scorer = sm.AnomalyScorer(sm.GaussianMixture(K, covariance_type="full", random_state=seed),
                              contamination=CONTAMINATION, calibration=calibration,
                              holdout_fraction=HOLDOUT, random_state=seed).fit(X_train)
    return float((scorer.predict(X_new) == -1).mean())


def main():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    seeds = range(parser.parse_args().seeds)
    data = load_breast_cancer()
    normal = data.data[data.target == 1]  # benign
    rows = []
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(normal))
        cut = int(TRAIN_SHARE * len(normal))
        scaler = StandardScaler().fit(normal[order[:cut]])
        train, new = scaler.transform(normal[order[:cut]]), scaler.transform(normal[order[cut:]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of the small fits
            rows.append((seed, flagged(train, new, "train", seed),
                         flagged(train, new, "holdout", seed)))
    print(f"breast cancer benign, {len(normal)} rows x {normal.shape[1]}; GaussianMixture("
          f"{K}, full); contamination {CONTAMINATION}; new normals flagged:")
    print(f"{'seed':>4}  {'train':>6}  {'holdout':>7}")
    for seed, train, holdout in rows:
        print(f"{seed:>4}  {train:6.3f}  {holdout:7.3f}")
    table = np.array([r[1:] for r in rows])
    for name, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        print(f"{name:>4}  {fn(table[:, 0]):6.3f}  {fn(table[:, 1]):7.3f}")


if __name__ == "__main__":
    main()
