"""The command line: fit and info, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import streammix as sm
from streammix.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_fit_then_info(tmp_path, blobs_parquet, blobs):
    result = run("fit", blobs_parquet, "-k", 3, "--seed", 0, "-o", tmp_path / "m.npz")
    assert result.exit_code == 0, result.output
    model = sm.load(tmp_path / "m.npz")
    expected = sm.GaussianMixture(3, random_state=0).fit(blobs_parquet)
    np.testing.assert_allclose(model.means_, expected.means_, rtol=1e-9)
    info = json.loads(run("info", tmp_path / "m.npz", "--json").output)
    assert info["n_components"] == 3 and info["feature_names"] == ["f0", "f1", "f2"]
    assert "3 components (full)" in run("info", tmp_path / "m.npz").output


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, blobs_parquet):
    cases = [
        ("fit", tmp_path / "none.parquet", "-o", tmp_path / "m.npz"),
        ("fit", blobs_parquet, "--columns", "f0,zz", "-o", tmp_path / "m.npz"),
        ("fit", blobs_parquet, "-k", 0, "-o", tmp_path / "m.npz"),
        ("info", tmp_path / "none.npz"),
    ]
    for args in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) <= 4  # click usage lines at most
    assert "column 'zz': no such column" in run(*cases[1]).output


def test_debug_shows_the_traceback(tmp_path):
    result = run("--debug", "info", tmp_path / "none.npz")
    assert result.exit_code != 0 and isinstance(result.exception, sm.ModelFileError)


def test_fit_with_checkpoint_resumes_and_refuses_other_parameters(tmp_path, blobs_parquet):
    args = ("fit", blobs_parquet, "-k", 3, "--seed", 0, "--checkpoint", tmp_path / "c")
    assert run(*args, "-o", tmp_path / "a.npz").exit_code == 0
    assert run(*args, "-o", tmp_path / "b.npz").exit_code == 0
    a, b = sm.load(tmp_path / "a.npz"), sm.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.means_, b.means_)  # b replays a's checkpoint: the same bits
    refused = run("fit", blobs_parquet, "-k", 4, "--seed", 0, "--checkpoint", tmp_path / "c",
                  "-o", tmp_path / "x.npz")
    assert refused.exit_code == 2 and "--restart" in refused.output
    assert "Traceback" not in refused.output
    restarted = run("fit", blobs_parquet, "-k", 4, "--seed", 0, "--checkpoint", tmp_path / "c",
                    "--restart", "-o", tmp_path / "x.npz")
    assert restarted.exit_code == 0


def test_a_bad_scheduler_address_fails_in_seconds(blobs_parquet, tmp_path):
    import time

    began = time.perf_counter()
    result = run("fit", blobs_parquet, "-k", 3, "--scheduler", "notanaddress", "-o",
                 tmp_path / "m.npz")
    assert result.exit_code == 2 and "not a reachable Dask scheduler address" in result.output
    assert time.perf_counter() - began < 10 and "Traceback" not in result.output


def test_a_model_file_naming_a_scheduler_is_used_where_the_command_says(blobs_parquet,
                                                                        tmp_path):
    import subprocess
    import sys

    path = tmp_path / "m.npz"
    assert run("fit", blobs_parquet, "-k", 3, "--seed", 0, "-o", path).exit_code == 0
    with np.load(path) as archive:
        entries = {name: archive[name] for name in archive.files}
    meta = json.loads(entries.pop("__meta__").tobytes())
    meta["params"]["scheduler"] = "tcp://127.0.0.1:1"  # a hostile or a gone cluster
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **entries)
    streammix = [sys.executable, "-m", "streammix.cli"]
    done = subprocess.run([*streammix, "predict", path, blobs_parquet, "-o", tmp_path / "p.pq"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Warning: " in done.stderr and "ignored runtime-only parameter(s)" in done.stderr
    info = subprocess.run(f"{sys.executable} -m streammix.cli info {path} | head -1",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert info.stdout.startswith("GaussianMixture") and "Broken pipe" not in info.stderr


@pytest.mark.slow
def test_quiet_silences_convergence_warnings(blobs_parquet, tmp_path):
    import subprocess
    import sys

    fit = [sys.executable, "-m", "streammix.cli", "fit", str(blobs_parquet), "-k", "3",
           "--max-iter", "1", "-o", str(tmp_path / "m.npz")]
    loud = subprocess.run(fit, capture_output=True, text=True, timeout=120)
    assert loud.stderr.startswith("Warning: Best performing initialization did not converge")
    quiet = subprocess.run([*fit, "-q"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == ""
