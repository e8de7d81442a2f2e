"""Checkpoint directories: locking, refusals, and replay without repeating work."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import streammix as sm
from streammix.engine.checkpoint import Checkpoint
from streammix.exceptions import CheckpointError, CheckpointInUseError


def fingerprint(data="d1", **params):
    return {"estimator": "X", "data": {"name": data}, "params": {"k": 3, **params}}


HOLD = """
import sys, time
from streammix.engine.checkpoint import Checkpoint
with Checkpoint(sys.argv[1], {"estimator": "X", "data": {"name": "d1"}, "params": {"k": 3}}):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_process_gets_in_use_error_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointInUseError, match=rf"in use by process {holder.pid} on"):
            Checkpoint(tmp_path, fingerprint()).__enter__()
    finally:
        holder.kill()  # no clean-up runs: the kernel releases the lock
        holder.wait()
    with Checkpoint(tmp_path, fingerprint()):
        assert (tmp_path / "lock").read_text().split()[0] == str(os.getpid())
        with pytest.raises(CheckpointInUseError):  # one holder, even within a process
            Checkpoint(tmp_path, fingerprint()).__enter__()


def test_lock_file_contents_never_decide_who_holds_it(tmp_path):
    # A file naming a live process, a garbage one, or another host's: only the OS lock counts.
    for content in (f"{os.getppid()} host\n", "garbage", "1 other-host\n"):
        (tmp_path / "lock").write_text(content)
        with Checkpoint(tmp_path, fingerprint()):
            pass


def test_refuses_other_data_other_parameters_and_other_versions(tmp_path):
    with Checkpoint(tmp_path, fingerprint()):
        pass
    with pytest.raises(CheckpointError, match=r"different data .*restart=True"):
        Checkpoint(tmp_path, fingerprint(data="d2")).__enter__()
    with pytest.raises(CheckpointError, match=r"different parameters \(k\)"):
        Checkpoint(tmp_path, fingerprint(k=4)).__enter__()
    meta = tmp_path / "checkpoint.json"
    meta.write_text(meta.read_text().replace('"version": 2', '"version": 99'))
    with pytest.raises(CheckpointError, match=r"version 99"):
        Checkpoint(tmp_path, fingerprint()).__enter__()
    for damaged in ("[1, 2, 3]", '{"format": "streammix-checkpoint", "entropy": "x"}', "[" * 9999,
                    '{"entropy": 1, "data": [1], "params": {}}'):
        meta.write_text(damaged)
        with pytest.raises(CheckpointError, match=r"checkpoint\.json is damaged"):
            Checkpoint(tmp_path, fingerprint()).__enter__()
    with Checkpoint(tmp_path, fingerprint(data="d2"), restart=True) as fresh:
        assert fresh.replay_pass() == (False, None)


def test_journal_and_loop_snapshots_round_trip(tmp_path):
    state = {"centers": np.arange(6.0).reshape(3, 2), "n": 3, "best": float("inf")}
    with Checkpoint(tmp_path, fingerprint()) as ckpt:
        ckpt.record_pass(state)
        with ckpt.loop() as (saved, save):
            assert saved is None and not ckpt.journaling
            save(state)
    with Checkpoint(tmp_path, fingerprint()) as ckpt:
        recorded, value = ckpt.replay_pass()
        assert recorded and value["n"] == 3 and value["best"] == float("inf")
        np.testing.assert_array_equal(value["centers"], state["centers"])
        with ckpt.loop() as (saved, _):
            np.testing.assert_array_equal(saved["centers"], state["centers"])


@pytest.mark.parametrize("make", [
    lambda d: sm.GaussianMixture(3, n_init=2, random_state=0, chunk_size=60, checkpoint=d),
    lambda d: sm.KMeans(3, init="k-means||", random_state=0, chunk_size=60, checkpoint=d),
    lambda d: sm.MiniBatchKMeans(3, batch_size=60, random_state=0, checkpoint=d),
], ids=["gmm", "kmeans", "minibatch"])
def test_rerun_with_finished_checkpoint_replays_without_reading(tmp_path, blobs_parquet,
                                                               read_counter, make):
    first = make(tmp_path / "ckpt").fit(blobs_parquet)
    assert read_counter
    read_counter.clear()
    again = make(tmp_path / "ckpt").fit(blobs_parquet)
    assert not read_counter  # every pass came from the checkpoint
    for name in ("means_", "cluster_centers_"):
        if hasattr(first, name):
            np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    plain = make(None).fit(blobs_parquet)  # a checkpoint does not change the result
    name = "means_" if hasattr(first, "means_") else "cluster_centers_"
    np.testing.assert_array_equal(getattr(plain, name), getattr(first, name))


def test_random_state_none_resumes_with_the_same_seed(tmp_path, blobs_parquet):
    a = sm.KMeans(3, init="k-means||", chunk_size=60, checkpoint=tmp_path / "c").fit(
        blobs_parquet)
    b = sm.KMeans(3, init="k-means||", chunk_size=60, checkpoint=tmp_path / "c").fit(
        blobs_parquet)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_changed_data_is_refused(tmp_path, blobs_parquet):
    sm.KMeans(3, random_state=0, checkpoint=tmp_path / "c").fit(blobs_parquet)
    with pytest.raises(CheckpointError, match=r"different parameters \(n_clusters\)"):
        sm.KMeans(4, random_state=0, checkpoint=tmp_path / "c").fit(blobs_parquet)
    os.utime(blobs_parquet / "a.parquet", ns=(1, 1))
    with pytest.raises(CheckpointError, match=r"different data \(changed.*a\.parquet\)"):
        sm.KMeans(3, random_state=0, checkpoint=tmp_path / "c").fit(blobs_parquet)
    sm.KMeans(3, random_state=0, checkpoint=tmp_path / "c", restart=True).fit(blobs_parquet)


def test_warm_start_fits_checkpoint_and_resume(tmp_path, blobs_parquet):
    def warm():
        model = sm.GaussianMixture(3, warm_start=True, max_iter=3, tol=0, random_state=0,
                                   chunk_size=60)
        with pytest.warns(sm.ConvergenceWarning):
            return model.fit(blobs_parquet)

    plain, checkpointed = warm(), warm()
    with pytest.warns(sm.ConvergenceWarning):
        plain.fit(blobs_parquet)  # continues from the first fit
        checkpointed.set_params(checkpoint=tmp_path / "c").fit(blobs_parquet)
    np.testing.assert_array_equal(checkpointed.means_, plain.means_)
    again = warm().set_params(checkpoint=tmp_path / "c")
    with pytest.warns(sm.ConvergenceWarning):
        again.fit(blobs_parquet)  # the same warm start: replayed from the checkpoint
    np.testing.assert_array_equal(again.means_, plain.means_)
    # A truly different start: refitting ``again`` as it is may start from the same bits
    # (EM can reach an exact fixed point, depending on the CPU's rounding).
    again.means_ = again.means_ + 0.5
    with pytest.raises(CheckpointError, match=r"another starting model \(warm_start\)"):
        again.fit(blobs_parquet)


def _tampered_fit(tmp_path, blobs_parquet, change):
    """A 3-iteration fit leaves its loop state; ``change(arrays, meta)`` edits that state."""
    def fit():
        return sm.GaussianMixture(3, max_iter=3, tol=0, random_state=0, chunk_size=60,
                                  checkpoint=tmp_path / "c").fit(blobs_parquet)

    with pytest.warns(sm.ConvergenceWarning):
        fit()
    path = sorted((tmp_path / "c").glob("loop-*.npz"))[-1]  # the EM loop
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays, path)
    return fit


def test_an_edited_loop_state_is_refused_not_resumed(tmp_path, blobs_parquet):
    def shift_means(arrays, path):
        means = [k for k, v in arrays.items() if v.shape == (3, 3) and k.startswith("a")]
        arrays[means[0]] = arrays[means[0]] + 1000  # still a valid npz, same shapes
        np.savez(path, **arrays)

    fit = _tampered_fit(tmp_path, blobs_parquet, shift_means)
    with pytest.raises(CheckpointError, match=r"loop-[\d.]+\.npz is damaged .*digest"):
        fit()


def test_a_state_of_another_shape_is_refused_even_with_a_matching_digest(tmp_path,
                                                                         blobs_parquet):
    from streammix.engine.checkpoint import _write

    fit = _tampered_fit(tmp_path, blobs_parquet, lambda arrays, path: _write(path, [1, 2, 3]))
    with pytest.raises(CheckpointError, match=r"does not hold a state of this fit"):
        fit()


def test_a_compressed_state_entry_is_refused(tmp_path, blobs_parquet):
    def compress(arrays, path):
        np.savez_compressed(path, **arrays)

    fit = _tampered_fit(tmp_path, blobs_parquet, compress)
    with pytest.raises(CheckpointError, match=r"is compressed"):
        fit()


def test_a_cut_short_newest_state_is_passed_over_and_the_model_is_unchanged(
        tmp_path, blobs_parquet, monkeypatch):
    """States cut short (a store that does not write atomically): the loop resumes from
    the generation before, a journaled pass is computed again; the model is the same."""
    from streammix.engine import folders
    from streammix.engine.checkpoint import PartialStateWarning

    def fit():
        with pytest.warns(sm.ConvergenceWarning):
            return sm.GaussianMixture(3, max_iter=4, tol=0, random_state=0, chunk_size=60,
                                      checkpoint=tmp_path / "c").fit(blobs_parquet)

    expected = sm.GaussianMixture(3, max_iter=4, tol=0, random_state=0, chunk_size=60)
    with pytest.warns(sm.ConvergenceWarning):
        expected.fit(blobs_parquet)
    with monkeypatch.context() as keep:  # every generation stays, to fall back to
        keep.setattr(folders.LocalFolder, "remove", lambda self, name: None)
        fit()
    loops = sorted((tmp_path / "c").glob("loop-000001.*.npz"))
    assert [p.name for p in loops] == [f"loop-000001.{g:06d}.npz" for g in range(1, 5)]
    newest_pass = sorted((tmp_path / "c").glob("pass-*.npz"))[-1]
    for path in (loops[-1], newest_pass):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(PartialStateWarning) as caught:
        resumed = fit()
    said = [str(w.message) for w in caught if issubclass(w.category, PartialStateWarning)]
    assert any(loops[-1].name in m and "cut short" in m and "state before" in m for m in said)
    assert any(newest_pass.name in m and "computing that pass again" in m for m in said)
    for name in ("means_", "covariances_", "weights_", "lower_bound_", "n_iter_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(expected, name))
    # the loop's last state is whole again, and the only one kept
    assert [p.name for p in (tmp_path / "c").glob("loop-000001.*.npz")] == [loops[-1].name]
