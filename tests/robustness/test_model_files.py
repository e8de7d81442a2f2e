"""Damaged and tampered model files under info, predict, score and plot, and through the API.

Each tampered file is refused: on the command line with exit 2 and one "Error: ..."
line naming the file, no output file left; through the API (``sm.load``, then
``score_samples`` and ``predict``) with a StreammixError, ValueError or TypeError. A zip
bomb is refused within 500 MB of peak RSS. Run-only parameters saved in the file
(``scheduler``) are ignored, loudly, without connecting anywhere.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ._harness import (
    BOMB_LIMIT_MB,
    HANG,
    OTHER,
    QUICK,
    SILENT,
    TIMEOUT,
    Case,
    Dataset,
    Failure,
    Run,
    api,
    check,
    crashed,
    expect_api_error,
    expect_error,
    last_line,
    npy,
    npy_header_only,
    read_model,
    streammix_cli,
    write_model,
    write_zip,
)

REFUSE, BOMB, IGNORE, EITHER = "refuse", "bomb", "ignore", "refuse-or-ignore"


# -- tampering ---------------------------------------------------------------------------------
def edit(fn: Callable[[dict, dict], object]):
    """A builder that applies ``fn(meta, entries)`` to a copy of the model."""
    def build(base: Path, out: Path):
        meta, entries = read_model(base)
        fn(meta, entries)
        write_model(out, meta, entries)
    return build


def edit_attr(name, fn: Callable[[np.ndarray], np.ndarray]):
    """A builder that replaces the fitted attribute ``name`` by ``fn(its copy)``."""
    def change(meta, entries):
        key = f"attr.{name}.npy"
        entries[key] = npy(fn(np.load(io.BytesIO(entries[key])).copy()))
    return edit(change)


def set_item(array, index, value):
    array[index] = value
    return array


def zip_bomb_means(base: Path, out: Path):
    meta, entries = read_model(base)
    del entries["attr.means_.npy"]
    write_model(out, meta, entries, bomb="attr.means_.npy")


def key_twice(base: Path, out: Path):
    """The metadata with ``n_iter_`` given twice (json keeps the last: a guess)."""
    meta, entries = read_model(base)
    text = json.dumps(meta).replace('"attributes": {', '"attributes": {"n_iter_": 1, ', 1)
    write_zip(out, {"__meta__.npy": npy(np.frombuffer(text.encode(), dtype=np.uint8)),
                    **entries})


def raw(data: bytes | Callable[[bytes], bytes]):
    def build(base: Path, out: Path):
        out.write_bytes(data(base.read_bytes()) if callable(data) else data)
    return build


# (name, builder, expectation). REFUSE: exit 2 and one "Error: ..." line naming the file,
# no output file, under every command; BOMB: the same, with peak RSS under 500 MB;
# IGNORE: succeed within 20 s without connecting, saying on stderr that `scheduler` is ignored;
# EITHER: REFUSE, or IGNORE of that parameter (the API: an allowed error, or a warning).
TAMPERS = [
    ("meta-no-params", edit(lambda m, e: m.pop("params")), REFUSE),
    ("meta-no-attributes", edit(lambda m, e: m.pop("attributes")), REFUSE),
    ("attributes-__dict__", edit(lambda m, e: m["attributes"].update(__dict__={})), REFUSE),
    ("attributes-__class__", edit(lambda m, e: m["attributes"].update(__class__="str")),
     REFUSE),
    ("means-header-1e12", edit(lambda m, e: e.update(
        {"attr.means_.npy": npy_header_only((10**12,))})), REFUSE),
    ("means-scalar", edit_attr("means_", lambda a: np.float64(1.0)), REFUSE),
    ("means-wrong-shape", edit_attr("means_", lambda a: np.zeros((3, 5))), REFUSE),
    ("prec-chol-wrong-shape", edit_attr("precisions_cholesky_", lambda a: np.ones((3, 5, 5))),
     REFUSE),
    ("weights-nan", edit_attr("weights_", lambda a: set_item(a, 0, np.nan)), REFUSE),
    ("means-nan", edit_attr("means_", lambda a: set_item(a, (1, 2), np.nan)), REFUSE),
    ("weights-sum-0.5", edit_attr("weights_", lambda a: a * 0.5), REFUSE),
    ("weights-negative", edit_attr("weights_", lambda a: np.array([-0.2, 0.6, 0.6])), REFUSE),
    ("prec-chol-zero-diag", edit_attr("precisions_cholesky_",
                                      lambda a: set_item(a, (0, 1, 1), 0.0)), REFUSE),
    ("prec-chol-negative-diag", edit_attr("precisions_cholesky_",
                                          lambda a: set_item(a, (0, 1, 1), -a[0, 1, 1])), REFUSE),
    ("n-components-str", edit(lambda m, e: m["params"].update(n_components="two")), REFUSE),
    ("covariance-type-bogus", edit(lambda m, e: m["params"].update(covariance_type="bogus")),
     REFUSE),
    # Run-only parameters: a refusal, or ignoring them loudly, as scheduler must be.
    ("n-workers-5000", edit(lambda m, e: m["params"].update(n_workers=5000)), EITHER),
    ("chunk-size-1", edit(lambda m, e: m["params"].update(chunk_size=1)), EITHER),
    ("scheduler-tcp", edit(lambda m, e: m["params"].update(scheduler="tcp://127.0.0.1:1")),
     IGNORE),
    ("extra-attr-evil", edit(lambda m, e: e.update({"attr.evil.npy": npy(np.arange(3.0))})),
     REFUSE),
    ("zip-bomb-means", zip_bomb_means, BOMB),
    ("truncated", raw(lambda data: data[: len(data) // 2]), REFUSE),
    ("not-a-zip", raw(b"#!/bin/sh\necho this is not a model file\n"), REFUSE),
    ("version-99", edit(lambda m, e: m.update(version=99)), REFUSE),
    ("unknown-estimator", edit(lambda m, e: m.update(estimator="os.system")), REFUSE),
    # The second red team (issue 29): values AnomalyScorer refuses, names that mis-score.
    ("contamination-5", edit(lambda m, e: m["attributes"].update(
        anomaly_threshold_=-3.0, anomaly_contamination_=5.0)), REFUSE),
    ("contamination-negative", edit(lambda m, e: m["attributes"].update(
        anomaly_threshold_=-3.0, anomaly_contamination_=-0.3)), REFUSE),
    ("feature-names-repeated", edit(lambda m, e: m["attributes"].update(
        feature_names_in_=["x0", "x1", "x0", "x3"])), REFUSE),
    ("meta-key-twice", key_twice, REFUSE),
]

TAMPERED_PARAM = {"scheduler-tcp": "scheduler", "n-workers-5000": "n_workers",
                  "chunk-size-1": "chunk_size"}

_built: dict[tuple[Path, str], Path] = {}
_building = threading.Lock()


def tampered(dataset: Dataset, name: str, build) -> Path:
    """The tampered copy of the model, built once for the session (cases share it)."""
    with _building:
        key = (dataset.root, name)
        if key not in _built:
            path = dataset.root / "tampered" / f"tampered-{name}.npz"
            path.parent.mkdir(exist_ok=True)
            build(dataset.model, path)
            _built[key] = path
        return _built[key]


def expect_ignored(r: Run, param: str) -> list[Failure]:
    """Success within 20 s, saying on stderr that ``param`` is ignored."""
    failures = crashed(r)
    if failures:
        return failures
    if r.seconds > QUICK:
        return [(HANG, f"took {r.seconds:.0f} s")]
    if r.code != 0:
        return [(OTHER, f"exit {r.code}, expected success: {last_line(r.stderr)}")]
    if param not in r.stderr:
        return [(SILENT, f"stderr does not mention the ignored parameter {param}")]
    return []


# -- the command line ---------------------------------------------------------------------------
def command_args(dataset: Dataset, command: str, model: Path, ws: Path):
    """The arguments of ``command`` on ``model``, and the output file it would write."""
    output = {"info": None, "predict": ws / "out.parquet", "score": ws / "s.parquet",
              "plot": ws / "p.png"}[command]
    args = ["info", model] if command == "info" else [command, model, dataset.data, "-o", output]
    return args, output


def cli_case(name, build, expectation, command) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        path = tampered(dataset, name, build)
        args, output = command_args(dataset, command, path, ws)
        if expectation == IGNORE:
            return expect_ignored(streammix_cli(*args, cwd=ws, timeout=QUICK),
                                  TAMPERED_PARAM[name])
        r = streammix_cli(*args, cwd=ws)
        if expectation == EITHER and r.code == 0:
            return expect_ignored(r, TAMPERED_PARAM[name])
        return expect_error(r, names=path.name, output=output,
                            memory_mb=BOMB_LIMIT_MB if expectation == BOMB else None)
    return Case(f"{name}:{command}", job)


@pytest.mark.parametrize("case", [
    cli_case(*tamper, command).param()
    for tamper in TAMPERS for command in ("info", "predict", "score", "plot")])
def test_tampered_model_under_command(case, sweep):
    check(sweep, case)


# -- the API ------------------------------------------------------------------------------------
def api_case(name, build, expectation) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        path = tampered(dataset, name, build)
        body = f"""
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = sm.load({str(path)!r})
                X = np.array({dataset.X[:5].tolist()!r})
                scores = model.score_samples(X)
                model.predict(X)
            return {{"scores": [float(s) for s in scores],
                     "warnings": [str(w.message) for w in caught]}}
        """
        r, out = api(body, ws, timeout=QUICK if expectation == IGNORE else TIMEOUT)
        if expectation == IGNORE or (expectation == EITHER and out and "result" in out):
            # Loads and scores within 20 s, without connecting, warning of the parameter.
            param = TAMPERED_PARAM[name]
            failures = crashed(r) or ([(HANG, f"took {r.seconds:.0f} s")] if r.seconds > QUICK
                                      else [])
            if not failures and (out is None or "result" not in out):
                failures = [(OTHER, f"expected success, got {str(out)[:120]}")]
            elif not failures and not any(param in w for w in out["result"]["warnings"]):
                failures = [(SILENT, f"no warning names the ignored parameter {param}")]
            return failures
        return expect_api_error(r, out,
                                memory_mb=BOMB_LIMIT_MB if expectation == BOMB else None)
    return Case(name, job)


@pytest.mark.parametrize("case", [api_case(*tamper).param() for tamper in TAMPERS])
def test_tampered_model_through_api(case, sweep):
    check(sweep, case)
