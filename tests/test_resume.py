"""A fit killed with SIGKILL, even during a checkpoint write, resumes to the same model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import streammix as sm

pytestmark = pytest.mark.slow  # each fit killed again and again in a child process

# Each: an expression of (data, ckpt) giving the fitted model.
FITS = {
    "gmm": "sm.GaussianMixture(3, n_init=2, tol=1e-6, random_state=0, chunk_size=60, "
           "checkpoint=ckpt).fit(data)",
    "bgm": "sm.BayesianGaussianMixture(4, n_init=2, tol=1e-6, random_state=0, chunk_size=60, "
           "weight_concentration_prior_type='dirichlet_distribution', checkpoint=ckpt).fit(data)",
    "kmeans": "sm.KMeans(3, init='k-means||', n_init=2, tol=1e-6, random_state=0, "
              "chunk_size=60, checkpoint=ckpt).fit(data)",
    "minibatch": "sm.MiniBatchKMeans(3, batch_size=40, max_no_improvement=None, max_iter=3, "
                 "random_state=0, n_workers=2, checkpoint=ckpt).fit(data)",
    "select": "sm.select(data, n_components=range(1, 4), covariance_types=['full', 'diag'], "
              "chunk_size=60, random_state=0, checkpoint=ckpt).best_",
}

# Runs in a child process: counts checkpoint writes (each ends with os.replace) and
# kills itself with SIGKILL at the chosen one, before the rename (a torn write) or after.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import streammix as sm
    kind, data, ckpt, kill_at, when = sys.argv[1:6]
    kill_at = int(kill_at)
    real_replace, count = os.replace, [0]
    def replace(src, dst):
        count[0] += 1
        if count[0] == kill_at and when == "during":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if count[0] == kill_at and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    eval(FITS[kind], {"sm": sm, "ckpt": ckpt, "data": data})
    print("finished", count[0])
""")


def fit_in_child(kind, data, ckpt, kill_at, when):
    script = f"FITS = {FITS!r}\n{CHILD}"
    return subprocess.run([sys.executable, "-c", script, kind, str(data), str(ckpt),
                           str(kill_at), when], capture_output=True, text=True, timeout=300)


def fit(kind, data, ckpt):
    return eval(FITS[kind], {"sm": sm, "ckpt": ckpt, "data": data})


def fitted(model):
    names = ("weights_", "means_", "covariances_", "cluster_centers_", "n_iter_", "lower_bound_",
             "inertia_", "n_steps_", "degrees_of_freedom_", "mean_precision_")
    return {n: getattr(model, n) for n in names if hasattr(model, n)}


@pytest.mark.parametrize("kind", list(FITS))
def test_killed_fits_resume_to_the_uninterrupted_model(tmp_path, blobs_parquet, kind):
    uninterrupted = fitted(fit(kind, blobs_parquet, None))
    # How many checkpoint writes a whole fit makes (one per journaled pass or iteration).
    done = fit_in_child(kind, blobs_parquet, tmp_path / "count", 10**9, "never")
    assert done.returncode == 0, done.stderr
    writes = int(done.stdout.split()[-1])
    assert writes > 8
    ckpt = tmp_path / "ckpt"
    # Kill the fit again and again, each time a few checkpoint writes after it
    # (re)started, alternately in the middle of a write and just after one.
    step, kills = max(2, writes // 5), 0
    while True:
        when = ("during", "after")[kills % 2]
        child = fit_in_child(kind, blobs_parquet, ckpt, step, when)
        if child.returncode == 0:
            break
        assert child.returncode == -9, (child.stdout, child.stderr)
        if when == "during":  # the torn write left only a temporary file
            assert any(n.endswith(".tmp") for n in os.listdir(ckpt))
        kills += 1
        assert kills < 40
    assert kills >= 3
    resumed = fitted(fit(kind, blobs_parquet, ckpt))
    assert resumed.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)  # bit for bit
