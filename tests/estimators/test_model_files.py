"""Model files are untrusted input: every field is checked before use, none can connect."""

from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest

import streammix as sm
from streammix.estimators.persistence import RUNTIME_PARAMS


def entries(path) -> dict:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def rewrite(path, change_meta=None, **arrays):
    """Rewrite model file ``path`` with its metadata changed and entries replaced or added
    (an entry given as None is removed)."""
    found = entries(path)
    meta = json.loads(found.pop("__meta__").tobytes())
    if change_meta is not None:
        change_meta(meta)
    for name, value in arrays.items():
        if value is None:
            found.pop(name, None)
        else:
            found[name] = value
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **found)
    return path


@pytest.fixture
def gmm_file(tmp_path, blobs):
    path = tmp_path / "model.npz"
    sm.GaussianMixture(3, random_state=0).fit(blobs).save(path)
    return path


def test_runtime_parameters_are_never_written(tmp_path, blobs):
    model = sm.GaussianMixture(3, random_state=0, scheduler="threads", n_workers=1,
                               chunk_size=100, checkpoint=tmp_path / "c", cache=False, verbose=0)
    model.fit(blobs).save(tmp_path / "m.npz")
    meta = json.loads(entries(tmp_path / "m.npz")["__meta__"].tobytes())
    assert not set(meta["params"]) & RUNTIME_PARAMS
    assert meta["params"]["n_components"] == 3


def test_a_scheduler_in_a_file_is_ignored_reported_and_never_contacted(gmm_file, blobs):
    def hostile(meta):
        meta["params"].update(scheduler="tcp://127.0.0.1:1", n_workers=5000, chunk_size=1)

    rewrite(gmm_file, hostile)
    with pytest.warns(sm.ModelFileWarning, match=r"chunk_size, n_workers, scheduler"):
        model = sm.load(gmm_file)
    assert model.scheduler is None and model.n_workers is None and model.chunk_size is None
    began = time.perf_counter()
    model.predict(blobs)  # in-process: port 1 would refuse, and a retry loop would take 10 s
    assert time.perf_counter() - began < 5


BAD_META = {
    "no params": (lambda m: m.pop("params"), r"no 'params' object"),
    "no attributes": (lambda m: m.pop("attributes"), r"no 'attributes' object"),
    "__dict__ attribute": (lambda m: m["attributes"].update(__dict__={}),
                           r"'__dict__' is not an attribute"),
    "unknown parameter": (lambda m: m["params"].update(evil=1), r"'evil' is not a parameter"),
    "n_components text": (lambda m: m["params"].update(n_components="two"),
                          r"n_components must be an integer"),
    "covariance type": (lambda m: m["params"].update(covariance_type="bogus"),
                        r"covariance_type must be one of"),
    "warm_start text": (lambda m: m["params"].update(warm_start="yes"),
                        r"warm_start must be True or False"),
    "n_iter_ negative": (lambda m: m["attributes"].update(n_iter_=-1), r"'n_iter_' must be"),
    "lower bound NaN": (lambda m: m["attributes"].update(lower_bound_=float("nan")),
                        r"'lower_bound_' must be a finite number"),
    "missing attribute": (lambda m: m["attributes"].pop("converged_"), r"'converged_' is missing"),
    "names for other features": (lambda m: m["attributes"].update(feature_names_in_=["a"]),
                                 r"1 names for 3 features"),
    "nested JSON": (lambda m: m["params"].update(tol=[[[1]]]), r"'tol' has a value of the wrong"),
    "unknown estimator": (lambda m: m.update(estimator="Popen"), r"unknown estimator 'Popen'"),
    # the second red team: values AnomalyScorer itself refuses, names that mis-score
    "contamination 5": (lambda m: m["attributes"].update(anomaly_threshold_=-3.0,
                                                         anomaly_contamination_=5.0),
                        r"'anomaly_contamination_' must be in \(0, 0.5\], got 5.0"),
    "contamination negative": (lambda m: m["attributes"].update(anomaly_threshold_=-3.0,
                                                                anomaly_contamination_=-0.3),
                               r"'anomaly_contamination_' must be in \(0, 0.5\]"),
    "contamination without threshold": (
        lambda m: m["attributes"].update(anomaly_contamination_=0.01),
        r"'anomaly_contamination_' is set without 'anomaly_threshold_'"),
    # issue 31: calibration values out of range (each loaded before, silently wrong)
    "contamination 0.9": (lambda m: m["attributes"].update(anomaly_threshold_=-3.0,
                                                           anomaly_contamination_=0.9),
                          r"'anomaly_contamination_' must be in \(0, 0.5\], got 0.9"),
    "contamination -1": (lambda m: m["attributes"].update(anomaly_threshold_=-3.0,
                                                          anomaly_contamination_=-1),
                         r"'anomaly_contamination_' must be in \(0, 0.5\], got -1"),
    "threshold 1e308, no recorded range": (
        lambda m: m["attributes"].update(anomaly_threshold_=1e308),
        r"'anomaly_threshold_': threshold 1e\+308 is above every score .*flags every record"),
    "threshold -1e308, no recorded range": (
        lambda m: m["attributes"].update(anomaly_threshold_=-1e308),
        r"'anomaly_threshold_': threshold -1e\+308 is below .*flags almost none"),
    "threshold 1e308 outside the recorded range": (
        lambda m: m["attributes"].update(anomaly_threshold_=1e308,
                                         anomaly_score_range_=[-40.0, -2.0]),
        r"'anomaly_threshold_': threshold 1e\+308 .*\(at most -2\): it flags every record"),
    "threshold -1e308 outside the recorded range": (
        lambda m: m["attributes"].update(anomaly_threshold_=-1e308,
                                         anomaly_score_range_=[-40.0, -2.0]),
        r"'anomaly_threshold_': threshold -1e\+308 .*\(from -40\): it flags almost none"),
    "range reversed": (lambda m: m["attributes"].update(anomaly_threshold_=-3.0,
                                                        anomaly_score_range_=[-2.0, -40.0]),
                       r"'anomaly_score_range_' must be two numbers, low < high"),
    "range of three": (lambda m: m["attributes"].update(anomaly_threshold_=-3.0,
                                                        anomaly_score_range_=[-9.0, -4.0, -2.0]),
                       r"'anomaly_score_range_' must be two numbers"),
    "range infinite": (lambda m: m["attributes"].update(anomaly_threshold_=-3.0,
                                                        anomaly_score_range_=[-1e400, -2.0]),
                       r"'anomaly_score_range_' must be a finite number"),
    "range without threshold": (lambda m: m["attributes"].update(
        anomaly_score_range_=[-40.0, -2.0]), r"'anomaly_score_range_' is set without"),
    "repeated feature name": (lambda m: m["attributes"].update(feature_names_in_=["a", "b", "a"]),
                              r"names 'a' twice"),
    "surrogate feature name": (
        lambda m: m["attributes"].update(feature_names_in_=["a", "b", "\ud800"]),
        r"not Unicode text"),
}


def test_a_key_twice_in_the_metadata_is_refused(gmm_file):
    """json keeps the last of two equal keys: which value counts would be a guess."""
    found = entries(gmm_file)
    text = found.pop("__meta__").tobytes().decode()
    text = text.replace('"attributes": {', '"attributes": {"n_iter_": 1, ', 1)
    assert text.count('"n_iter_"') == 2
    np.savez(gmm_file, __meta__=np.frombuffer(text.encode(), dtype=np.uint8), **found)
    with pytest.raises(sm.ModelFileError, match=r"holds the key 'n_iter_' twice"):
        sm.load(gmm_file)


@pytest.mark.parametrize("case", BAD_META, ids=list(BAD_META))
def test_bad_metadata_is_one_clear_error_naming_the_field(gmm_file, case):
    change, message = BAD_META[case]
    rewrite(gmm_file, change)
    with pytest.raises(sm.ModelFileError, match=rf"model\.npz: .*{message}"):
        sm.load(gmm_file)


def _not_pd(path):
    chol = entries(path)["attr.precisions_cholesky_"].copy()
    chol[0, 1, 1] = -1.0
    return chol


BAD_ARRAYS = {
    "NaN weight": (lambda e: {"attr.weights_": np.array([np.nan, 0.5, 0.5])}, r"not finite"),
    "NaN mean": (lambda e: {"attr.means_": np.where(e["attr.means_"] > 0, np.nan, 0)},
                 r"'means_' has values that are not finite"),
    "weights off the simplex": (lambda e: {"attr.weights_": np.array([0.5, 0.5, 0.5])},
                                r"sum to 1"),
    "negative weight": (lambda e: {"attr.weights_": np.array([-0.5, 1.0, 0.5])},
                        r"non-negative"),
    "scalar means": (lambda e: {"attr.means_": np.float64(1.0)}, r"'attr.means_' has shape"),
    "wrong-shape means": (lambda e: {"attr.means_": np.zeros((2, 3))}, r"expected \(3, 3\)"),
    "wrong-shape cholesky": (lambda e: {"attr.precisions_cholesky_": np.ones(3)},
                             r"'attr.precisions_cholesky_' has shape"),
    "text array": (lambda e: {"attr.means_": np.array([["a"] * 3] * 3)}, r"plain numbers"),
    "unknown entry": (lambda e: {"attr.evil": np.zeros(3)}, r"unexpected entry 'attr.evil'"),
    "missing entry": (lambda e: {"attr.means_": None}, r"'attr.means_' is missing"),
    "precisions disagree": (lambda e: {"attr.precisions_": e["attr.precisions_"] * 2},
                            r"disagree"),
    "covariance not PD": (lambda e: {"attr.covariances_": -e["attr.covariances_"]},
                          r"'covariances_'\[0\] is not positive definite"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=list(BAD_ARRAYS))
def test_bad_arrays_are_one_clear_error_naming_the_field(gmm_file, case):
    change, message = BAD_ARRAYS[case]
    rewrite(gmm_file, **change(entries(gmm_file)))
    with pytest.raises(sm.ModelFileError, match=rf"model\.npz: .*{message}"):
        sm.load(gmm_file)


def test_non_positive_definite_cholesky_factor_is_refused(gmm_file):
    chol = _not_pd(gmm_file)
    rewrite(gmm_file, **{"attr.precisions_cholesky_": chol,
                         "attr.precisions_": np.matmul(chol, chol.transpose(0, 2, 1))})
    with pytest.raises(sm.ModelFileError, match=r"upper-triangular with a positive diagonal"):
        sm.load(gmm_file)


def _replace_entry(path, name, data: bytes, compress=zipfile.ZIP_STORED):
    """Rewrite the zip with entry ``name`` holding raw ``data``."""
    with zipfile.ZipFile(path) as archive:
        kept = {i.filename: archive.read(i) for i in archive.infolist() if i.filename != name}
    with zipfile.ZipFile(path, "w") as archive:
        for filename, content in kept.items():
            archive.writestr(filename, content)
        archive.writestr(name, data, compress_type=compress)


def _npy_header(shape, dtype="<f8"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_a_huge_declared_shape_is_refused_before_anything_is_read(gmm_file):
    _replace_entry(gmm_file, "attr.means_.npy", _npy_header((10**12,)) + b"\0" * 64)
    with pytest.raises(sm.ModelFileError, match=r"'attr.means_' has shape \(1000000000000,\)"):
        sm.load(gmm_file)


@pytest.mark.slow
def test_a_zip_bomb_entry_is_refused_without_inflating_it(gmm_file):
    # 2 GB of zeros compress to ~2 MB; the entry is never inflated.
    header = _npy_header((3, 3))
    bomb = zipfile.ZipInfo("attr.means_.npy")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(gmm_file) as archive:
        kept = {i.filename: archive.read(i) for i in archive.infolist()
                if i.filename != "attr.means_.npy"}
    with zipfile.ZipFile(gmm_file, "w") as archive:
        for filename, content in kept.items():
            archive.writestr(filename, content)
        with archive.open(bomb, "w", force_zip64=True) as handle:
            handle.write(header)
            zeros = b"\0" * 2**24
            for _ in range(128):
                handle.write(zeros)
    with pytest.raises(sm.ModelFileError, match=r"'attr.means_' is compressed"):
        sm.load(gmm_file)


def test_a_flipped_byte_is_detected(gmm_file):
    data = bytearray(gmm_file.read_bytes())
    with zipfile.ZipFile(gmm_file) as archive:
        info = archive.getinfo("attr.means_.npy")
    data[info.header_offset + 30 + len(info.filename) + 128 + 3] ^= 0x40
    gmm_file.write_bytes(bytes(data))
    with pytest.raises(sm.ModelFileError, match=r"model\.npz: .*(damaged|CRC|Bad)"):
        sm.load(gmm_file)


@pytest.mark.parametrize("make", [
    lambda: sm.KMeans(3, random_state=0),
    lambda: sm.MiniBatchKMeans(3, batch_size=100, random_state=0),
], ids=["kmeans", "minibatch"])
def test_centre_models_are_checked_too(tmp_path, blobs, make):
    path = tmp_path / "km.npz"
    make().fit(blobs).save(path)
    loaded = sm.load(path)
    assert not hasattr(loaded, "labels_")  # training-data labels are not part of the model
    rewrite(path, **{"attr.cluster_centers_": np.full((3, 3), np.inf)})
    with pytest.raises(sm.ModelFileError, match=r"'cluster_centers_' has values that are not"):
        sm.load(path)
    rewrite(path, lambda m: m["params"].update(n_clusters=4))
    with pytest.raises(sm.ModelFileError, match=r"'attr.cluster_centers_' has shape \(3, 3\)"):
        sm.load(path)


def test_files_of_the_first_release_still_load_quietly(tmp_path, blobs):
    import warnings

    path = tmp_path / "km.npz"
    sm.KMeans(3, random_state=0).fit(blobs).save(path)
    runtime_at_defaults = {"scheduler": None, "n_workers": None, "checkpoint": None,
                           "restart": False, "cache": "auto", "chunk_size": None, "verbose": 0}
    rewrite(path, lambda m: m["params"].update(runtime_at_defaults),
            **{"attr.labels_": np.zeros(len(blobs), dtype=np.int64)})  # as 0.1 wrote them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = sm.load(path)
    assert not hasattr(loaded, "labels_") and loaded.cluster_centers_.shape == (3, 3)
