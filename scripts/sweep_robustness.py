"""Adversarial robustness sweep of the streammix command line and API: a report, not a test.

Run:  .venv/bin/python scripts/sweep_robustness.py [--strict] [--jobs 2] [--keep] [-k TEXT]
                                                   [--source DIR]

``--source DIR`` sweeps another checkout's ``streammix`` package (DIR holds it), e.g.
an older commit exported with ``git archive COMMIT streammix | tar -x -C DIR``.

Builds a small dataset and model in a temporary directory, then feeds
streammix damaged model files and checkpoints, malformed record streams,
hostile watched folders, bad command-line input and extreme values. Every
case states what should happen; each way it does not is counted as one of:

  tracebacks  "Traceback" on a command's stderr, or an API exception that is not a
              StreammixError, ValueError or TypeError where an error is expected
  silent      a wrong result without an error: exit 0 where a refusal or a flag was
              due, nothing flagged, a NaN score, output that is not strict JSON
  lost        records (or watched files) that go in and do not come out
  hangs       a command still running at its timeout (60 s; 20 s where it must not
              wait on a network connection)
  other       an expectation missed another way: exit code, an error of several
              lines or not naming the file, peak memory, noise on stderr

Prints one table and the failing cases, and exits 0 (it is a report), or 1 with
--strict when anything failed. Every command runs in a subprocess with its own
timeout and a memory watchdog, so the sweep survives what it provokes. Nothing
networked but 127.0.0.1 (a port where nothing listens); no Dask cluster.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TIMEOUT = 60.0  # seconds for any command
QUICK = 20.0  # seconds for a command that must not wait on a network connection
BOMB_LIMIT_MB = 500  # peak RSS allowed while refusing a zip bomb
KILL_MB = 3000  # a child above this is killed: the sweep must not take the machine down
BOMB_ITEMS = 250_000_000  # float64 zeros: ~2 GB inflated from ~2 MB deflated
FEATURES = [f"x{j}" for j in range(4)]

TRACEBACK, SILENT, LOST, HANG, OTHER = "tracebacks", "silent", "lost", "hangs", "other"
KINDS = (TRACEBACK, SILENT, LOST, HANG, OTHER)

Failure = tuple[str, str]  # (kind, why)

_ENTRY = Path(sys.executable).with_name("streammix")
CLI = [str(_ENTRY)] if _ENTRY.exists() else [sys.executable, "-m", "streammix.cli"]

# Children get a pinned environment: a UTF-8 locale with strict decoding of stdin, as in
# en_US.UTF-8 (C.UTF-8 alone would give Python's lenient surrogateescape, which hides what
# invalid UTF-8 does to most users), no inherited Dask configuration (a DASK_SCHEDULER_ADDRESS
# would connect somewhere), no warning overrides, a headless matplotlib.
ENV = {k: v for k, v in os.environ.items()
       if not k.startswith("DASK_") and k not in ("PYTHONUTF8", "PYTHONWARNINGS", "PYTHONDEVMODE")}
ENV.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", PYTHONIOENCODING="utf-8:strict", MPLBACKEND="Agg",
           PYTHONHASHSEED="0")


# -- running commands ------------------------------------------------------------------
@dataclass
class Run:
    code: int | None
    stdout: bytes
    stderr: str
    seconds: float
    peak_mb: float
    timed_out: bool = False
    memory_killed: bool = False


_run_numbers = itertools.count()


def _rss_mb(pid) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return 0.0


def run(args, cwd, *, stdin: bytes | None = None, timeout=TIMEOUT) -> Run:
    """Run ``args`` in its own session; stdout/stderr go to files (no pipe can fill up).

    The child is reaped with wait4, which gives its own peak RSS; it is killed (with
    its process group) at ``timeout`` or above ``KILL_MB`` of RSS.
    """
    cwd = Path(cwd)
    logs = cwd / ".sweep"
    logs.mkdir(exist_ok=True)
    n = next(_run_numbers)
    out_path, err_path, in_path = (logs / f"{n}.{ext}" for ext in ("out", "err", "in"))
    if stdin is not None:
        in_path.write_bytes(stdin)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(out_path, "wb"))
        err = stack.enter_context(open(err_path, "wb"))
        inp = stack.enter_context(open(in_path, "rb")) if stdin is not None \
            else subprocess.DEVNULL
        began = time.monotonic()
        proc = subprocess.Popen([str(a) for a in args], cwd=cwd, stdin=inp, stdout=out,
                                stderr=err, env=ENV, start_new_session=True)
        timed_out = killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not (timed_out or killed):
                timed_out = time.monotonic() - began > timeout
                killed = not timed_out and _rss_mb(proc.pid) > KILL_MB
                if timed_out or killed:  # its own session: the group id is its pid
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.02)
        seconds = time.monotonic() - began
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    return Run(code, out_path.read_bytes(), err_path.read_text(errors="replace"), seconds,
               usage.ru_maxrss / 1024, timed_out, killed)


def streammix(*args, cwd, **kwargs) -> Run:
    return run([*CLI, *args], cwd, **kwargs)


def piped(args, reader, cwd, *, stdin: bytes | None = None) -> tuple[Run, str]:
    """``streammix ARGS | READER``; returns the streammix run (stdout not kept)."""
    cwd = Path(cwd)
    err_path, in_path = cwd / "piped.err", cwd / "piped.in"
    in_path.write_bytes(stdin or b"")
    began = time.monotonic()
    with open(err_path, "wb") as err, open(in_path, "rb") as inp:
        producer = subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, stdin=inp,
                                    stdout=subprocess.PIPE, stderr=err, env=ENV,
                                    start_new_session=True)
        consumer = subprocess.Popen(reader, cwd=cwd, stdin=producer.stdout,
                                    stdout=subprocess.DEVNULL, start_new_session=True)
        producer.stdout.close()  # only the reader holds the pipe now
        timed_out = False
        try:
            producer.wait(TIMEOUT)
            consumer.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            for proc in (producer, consumer):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    result = Run(producer.returncode, b"", err_path.read_text(errors="replace"),
                 time.monotonic() - began, 0.0, timed_out)
    return result, " ".join(reader)


API_PROGRAM = """\
import json
import math
import warnings

import numpy as np

import streammix as sm
from streammix.exceptions import StreammixError


def body():
{body}


try:
    out = {{"result": body()}}
except (StreammixError, ValueError, TypeError) as exc:
    out = {{"error": type(exc).__name__, "message": str(exc)[:300]}}
except BaseException as exc:
    out = {{"unexpected": type(exc).__name__, "message": str(exc)[:300]}}
print("SWEEP-RESULT", json.dumps(out))
"""


def api(body: str, cwd, *, timeout=TIMEOUT) -> tuple[Run, dict | None]:
    """Run ``body`` (the inside of a function returning JSON-able data) in a fresh Python."""
    program = API_PROGRAM.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    r = run([sys.executable, "-c", program], cwd, timeout=timeout)
    for line in r.stdout.decode(errors="replace").splitlines():
        if line.startswith("SWEEP-RESULT "):
            return r, json.loads(line.split(" ", 1)[1])
    return r, None


# -- judging runs --------------------------------------------------------------------------
def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def crashed(r: Run) -> list[Failure]:
    """A hang, a memory kill or a traceback: then nothing else about the run is judged."""
    if r.timed_out:
        return [(HANG, f"killed after {r.seconds:.0f} s")]
    if r.memory_killed:
        return [(OTHER, f"killed at {KILL_MB} MB of RSS")]
    if "Traceback" in r.stderr:
        return [(TRACEBACK, _last_line(r.stderr))]
    return []


def expect_error(r: Run, *, names: str | None = None, output: Path | None = None,
                 memory_mb: float | None = None) -> list[Failure]:
    """Exit 2 with one line "Error: ..." on stderr (naming ``names``), and no output file."""
    failures = crashed(r)
    if memory_mb is not None and r.peak_mb > memory_mb and not r.memory_killed:
        failures.append((OTHER, f"peak RSS {r.peak_mb:.0f} MB > {memory_mb} MB"))
    if r.memory_killed or any(kind in (HANG, TRACEBACK) for kind, _ in failures):
        return failures
    if r.code == 0:
        said = _last_line(r.stderr) or _last_line(r.stdout.decode(errors="replace"))
        return [*failures, (SILENT, f"exit 0 ({said[:100]})" if said else "exit 0")]
    lines = r.stderr.strip().splitlines()
    if r.code != 2:
        failures.append((OTHER, f"exit {r.code}: {_last_line(r.stderr)}"))
    elif len(lines) != 1 or not lines[0].startswith("Error: "):
        failures.append((OTHER, f"stderr is {len(lines)} lines, not one 'Error:' line: "
                                f"{_last_line(r.stderr)}"))
    elif names and names not in lines[0]:
        failures.append((OTHER, f"error does not name {names}: {lines[0][:120]}"))
    if output is not None and output.exists():
        failures.append((OTHER, f"failed but left {output.name}"))
    return failures


def expect_api_error(r: Run, out: dict | None, *, memory_mb=None) -> list[Failure]:
    """An exception of an allowed type (StreammixError, ValueError, TypeError)."""
    failures = crashed(r)
    if memory_mb is not None and r.peak_mb > memory_mb and not r.memory_killed:
        failures.append((OTHER, f"peak RSS {r.peak_mb:.0f} MB > {memory_mb} MB"))
    if out is None:
        return failures or [(OTHER, f"no result (exit {r.code}): {_last_line(r.stderr)}")]
    if "unexpected" in out:
        failures.append((TRACEBACK, f"{out['unexpected']}: {out['message'][:120]}"))
    elif "result" in out:
        failures.append((SILENT, "no error raised"))
    return failures


# -- the fixture: a dataset and a calibrated model -----------------------------------------
@dataclass
class Fixture:
    root: Path
    data: Path  # Parquet folder: 20 000 rows x x0..x3, 3 components, seed 0
    model: Path  # GaussianMixture(k=3), seed 0, anomaly threshold at 1 % contamination
    X: np.ndarray  # the data's rows in memory

    def record(self, i: int, record_id: int) -> bytes:
        row = dict(zip(FEATURES, map(float, self.X[i]), strict=True))
        return json.dumps({"id": record_id, **row}).encode()

    def write_parquet(self, path: Path, rows: slice, *, scale=1.0, id_offset=0) -> Path:
        """Rows of the data with an ``id`` column (ids from 900 000 mark files outside)."""
        ids = np.arange(self.X.shape[0])[rows] + id_offset
        columns = {"id": ids, **{n: self.X[rows, j] * scale for j, n in enumerate(FEATURES)}}
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        return path


def build_fixture(root: Path) -> Fixture:
    data, model = root / "data", root / "model.npz"
    for args in (["make-data", data, "--rows", 20000, "--features", 4, "--components", 3,
                  "--seed", 0, "-q"],
                 ["fit", data, "-k", 3, "-o", model, "--contamination", 0.01, "--seed", 0,
                  "-q"]):
        r = streammix(*args, cwd=root)
        if r.code != 0:
            sys.exit(f"setup failed: streammix {' '.join(map(str, args))}\n{r.stderr}")
    table = pq.read_table(data)
    X = np.column_stack([table[n].to_numpy() for n in FEATURES])
    return Fixture(root, data, model, X)


# -- zip surgery ---------------------------------------------------------------------------
def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_header_only(shape, extra=64) -> bytes:
    """A .npy header declaring float64 ``shape``, followed by only ``extra`` bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue() + bytes(extra)


def read_zip(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path, entries: dict[str, bytes], *, bomb: str | None = None):
    """Write ``entries`` (stored), plus a deflated entry ``bomb`` of ~2 GB of zeros."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if bomb is None:
            return
        info = zipfile.ZipInfo(bomb, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zeros = memoryview(bytes(16 << 20))
        with archive.open(info, "w", force_zip64=True) as handle:
            handle.write(npy_header_only((BOMB_ITEMS,), extra=0))
            left = BOMB_ITEMS * 8
            while left:
                piece = min(left, len(zeros))
                handle.write(zeros[:piece])
                left -= piece


def read_model(path) -> tuple[dict, dict[str, bytes]]:
    entries = read_zip(path)
    meta = json.loads(bytes(np.load(io.BytesIO(entries.pop("__meta__.npy")))).decode())
    return meta, entries


def write_model(path, meta, entries, *, bomb=None):
    meta_entry = npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    write_zip(path, {"__meta__.npy": meta_entry, **entries}, bomb=bomb)


def attr(entries, name) -> np.ndarray:
    return np.load(io.BytesIO(entries[f"attr.{name}.npy"]))


# -- 1. tampered model files -------------------------------------------------------------------
def edit(fn: Callable[[dict, dict], object]):
    """A builder that applies ``fn(meta, entries)`` to a copy of the model."""
    def build(base: Path, out: Path):
        meta, entries = read_model(base)
        fn(meta, entries)
        write_model(out, meta, entries)
    return build


def edit_attr(name, fn: Callable[[np.ndarray], np.ndarray]):
    def change(meta, entries):
        entries[f"attr.{name}.npy"] = npy(fn(attr(entries, name).copy()))
    return edit(change)


def set_item(array, index, value):
    array[index] = value
    return array


def zip_bomb_model(base: Path, out: Path):
    meta, entries = read_model(base)
    del entries["attr.means_.npy"]
    write_model(out, meta, entries, bomb="attr.means_.npy")


def raw(data: bytes | Callable[[bytes], bytes]):
    def build(base: Path, out: Path):
        out.write_bytes(data(base.read_bytes()) if callable(data) else data)
    return build


REFUSE, BOMB, IGNORE, EITHER = "refuse", "bomb", "ignore", "refuse-or-ignore"

# (name, builder, expectation). REFUSE: exit 2 and one "Error: ..." line naming the file,
# no output file, under every command; BOMB: the same, with peak RSS under 500 MB;
# IGNORE: succeed within 20 s without connecting, saying on stderr that `scheduler` is ignored;
# EITHER: REFUSE, or IGNORE of that parameter (the API: an allowed error, or a warning).
MODEL_TAMPERS = [
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
    # Run-only parameters: the brief asked for a refusal; ignoring them loudly, as scheduler
    # must be, is accepted too.
    ("n-workers-5000", edit(lambda m, e: m["params"].update(n_workers=5000)), EITHER),
    ("chunk-size-1", edit(lambda m, e: m["params"].update(chunk_size=1)), EITHER),
    ("scheduler-tcp", edit(lambda m, e: m["params"].update(scheduler="tcp://127.0.0.1:1")),
     IGNORE),
    ("extra-attr-evil", edit(lambda m, e: e.update({"attr.evil.npy": npy(np.arange(3.0))})),
     REFUSE),
    ("zip-bomb-means", zip_bomb_model, BOMB),
    ("truncated", raw(lambda data: data[: len(data) // 2]), REFUSE),
    ("not-a-zip", raw(b"#!/bin/sh\necho this is not a model file\n"), REFUSE),
    ("version-99", edit(lambda m, e: m.update(version=99)), REFUSE),
    ("unknown-estimator", edit(lambda m, e: m.update(estimator="os.system")), REFUSE),
]


def model_commands(fx: Fixture, model: Path, ws: Path) -> dict[str, tuple[list, Path | None]]:
    return {
        "info": (["info", model], None),
        "predict": (["predict", model, fx.data, "-o", ws / "out.parquet"], ws / "out.parquet"),
        "score": (["score", model, fx.data, "-o", ws / "s.parquet"], ws / "s.parquet"),
        "plot": (["plot", model, fx.data, "-o", ws / "p.png"], ws / "p.png"),
    }


TAMPERED_PARAM = {"scheduler-tcp": "scheduler", "n-workers-5000": "n_workers",
                  "chunk-size-1": "chunk_size"}


def expect_ignored(r: Run, param: str) -> list[Failure]:
    """Success within 20 s, saying on stderr that ``param`` is ignored."""
    if r.timed_out:
        return [(HANG, f"killed after {r.seconds:.0f} s")]
    failures = crashed(r)
    if failures:
        return failures
    if r.seconds > QUICK:
        return [(HANG, f"took {r.seconds:.0f} s")]
    if r.code != 0:
        return [(OTHER, f"exit {r.code}, expected success: {_last_line(r.stderr)}")]
    if param not in r.stderr:
        return [(SILENT, f"stderr does not mention the ignored parameter {param}")]
    return []


def model_file_job(name, build, expectation):
    """The tampered model under info, predict, score and plot."""
    def job(fx: Fixture, ws: Path) -> dict[str, list[Failure]]:
        path = ws / f"tampered-{name}.npz"
        build(fx.model, path)
        results = {}
        for command, (args, output) in model_commands(fx, path, ws).items():
            if expectation == IGNORE:
                results[f"{name}:{command}"] = expect_ignored(
                    streammix(*args, cwd=ws, timeout=QUICK), TAMPERED_PARAM[name])
                continue
            r = streammix(*args, cwd=ws)
            if expectation == EITHER and r.code == 0:
                results[f"{name}:{command}"] = expect_ignored(r, TAMPERED_PARAM[name])
                continue
            results[f"{name}:{command}"] = expect_error(
                r, names=path.name, output=output,
                memory_mb=BOMB_LIMIT_MB if expectation == BOMB else None)
        return results
    return job


def model_api_job(name, build, expectation):
    """The tampered model through the API: sm.load, then score_samples and predict."""
    def job(fx: Fixture, ws: Path) -> dict[str, list[Failure]]:
        path = ws / f"tampered-{name}.npz"
        build(fx.model, path)
        body = f"""
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = sm.load({str(path)!r})
                X = np.array({fx.X[:5].tolist()!r})
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
            return {f"{name}:api": failures}
        return {f"{name}:api": expect_api_error(
            r, out, memory_mb=BOMB_LIMIT_MB if expectation == BOMB else None)}
    return job


# -- 2. tampered checkpoints ---------------------------------------------------------------
def fit_args(fx: Fixture, output, checkpoint):
    return ["fit", fx.data, "-k", 3, "-o", output, "--seed", 0, "--max-iter", 3,
            "--checkpoint", checkpoint, "-q"]


def last_loop(checkpoint: Path) -> Path:
    return sorted(checkpoint.glob("loop-*.npz"))[-1]


def state_arrays(skeleton, field_name) -> list[str]:
    """Keys of the arrays a checkpoint skeleton holds under ``field_name``."""
    found = []

    def walk(node, key=None):
        if isinstance(node, dict):
            if "$array" in node and key == field_name:
                found.append(node["$array"])
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)

    walk(skeleton)
    return found


def loop_means(path: Path) -> tuple[dict[str, bytes], list[str]]:
    entries = read_zip(path)
    skeleton = json.loads(bytes(np.load(io.BytesIO(entries["__state__.npy"]))).decode())
    return entries, state_arrays(skeleton, "means")


def shift_loop_means(checkpoint: Path):
    path = last_loop(checkpoint)
    entries, keys = loop_means(path)
    for key in keys:
        entries[f"{key}.npy"] = npy(np.load(io.BytesIO(entries[f"{key}.npy"])) + 1000)
    write_zip(path, entries)


def loop_state_int_list(checkpoint: Path):
    path = last_loop(checkpoint)
    entries = read_zip(path)
    entries["__state__.npy"] = npy(np.frombuffer(b"[1, 2, 3]", dtype=np.uint8))
    write_zip(path, entries)


def json_int_list(checkpoint: Path):
    (checkpoint / "checkpoint.json").write_text("[1, 2, 3]\n")


def bomb_loop_means(checkpoint: Path):
    path = last_loop(checkpoint)
    entries, keys = loop_means(path)
    del entries[f"{keys[0]}.npy"]
    write_zip(path, entries, bomb=f"{keys[0]}.npy")


def lock_holding(text: str):
    def tamper(checkpoint: Path):
        (checkpoint / "lock").write_text(text)
    return tamper


def same_model(a: Path, b: Path) -> bool:
    with np.load(a) as first, np.load(b) as second:
        return bool(np.array_equal(first["attr.means_"], second["attr.means_"]))


def checkpoint_job(tamper, expectation):
    """Fit with --checkpoint (3 iterations), tamper with the directory, fit again."""
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        checkpoint = ws / "ckpt"
        first = streammix(*fit_args(fx, ws / "first.npz", checkpoint), cwd=ws)
        if first.code != 0:
            return [(OTHER, f"setup fit failed: {_last_line(first.stderr)}")]
        tamper(checkpoint)
        second = ws / "second.npz"
        r = streammix(*fit_args(fx, second, checkpoint), cwd=ws)
        if expectation == "stale-lock":  # no traceback or hang; a clean refusal or the model
            failures = crashed(r)
            if failures or r.code == 2:
                return failures or expect_error(r)
            if r.code != 0:
                return [(OTHER, f"exit {r.code}: {_last_line(r.stderr)}")]
            return [] if same_model(ws / "first.npz", second) else \
                [(SILENT, "a different model than the first fit")]
        failures = expect_error(r, output=second,
                                memory_mb=BOMB_LIMIT_MB if expectation == BOMB else None)
        if r.code == 0 and second.exists():  # say which kind of silence
            failures = [(SILENT, "resumed from the tampered state: a different model")] \
                if not same_model(ws / "first.npz", second) else \
                [(OTHER, "not refused (the model is the first fit's)")]
        return failures
    return job


CHECKPOINT_CASES = [
    # Loop state means + 1000, still a valid npz: refused on re-run (exit 2), never resumed.
    ("loop-means-shifted", shift_loop_means, REFUSE),
    # The loop file's __state__ JSON is [1, 2, 3]: refused, exit 2, no traceback.
    ("loop-state-int-list", loop_state_int_list, REFUSE),
    # checkpoint.json is [1, 2, 3]: refused, exit 2, no traceback.
    ("checkpoint-json-int-list", json_int_list, REFUSE),
    # The loop's means entry inflates to ~2 GB: refused, exit 2, peak RSS < 500 MB.
    ("loop-zip-bomb", bomb_loop_means, BOMB),
    # A lock file with garbage in place of a pid: no traceback, no hang; either taken over as
    # stale (exit 0, the same model) or refused in one line (exit 2).
    ("lock-garbage-text", lock_holding("garbage\n"), "stale-lock"),
    ("lock-pid-1e20", lock_holding("100000000000000000000 somehost\n"), "stale-lock"),
    ("lock-pid-negative", lock_holding("-1 somehost\n"), "stale-lock"),
]


# -- 3. malformed stdin streams -------------------------------------------------------------
def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def check_stream(r: Run, expect: list[str]) -> list[Failure]:
    """One strict-JSON line per record, in order; "error", "scored" or "anomaly" each."""
    failures = crashed(r)
    if failures and failures[0][0] == HANG:
        return failures
    lines = r.stdout.splitlines()
    if len(lines) != len(expect):
        failures.append((LOST, f"{len(lines)} output lines for {len(expect)} records (exit "
                               f"{r.code}: {_last_line(r.stderr)[:80]})"))
    for i, (line, want) in enumerate(zip(lines, expect, strict=False)):
        try:
            out = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
        except ValueError as exc:
            failures.append((SILENT, f"line {i} is not strict JSON ({str(exc)[:60]})"))
            continue
        if not isinstance(out, dict):
            failures.append((SILENT, f"line {i} is not an object"))
        elif want == "error" and "error" not in out:
            failures.append((SILENT, f"bad record {i} scored, not an error"))
        elif want != "error" and ("error" in out or "score" not in out):
            failures.append((SILENT, f"record {i} not scored: {str(out.get('error'))[:80]}"))
        elif want == "anomaly" and out.get("anomaly") is not True:
            failures.append((SILENT, f"record {i} not flagged (score {out.get('score')})"))
    if not failures and r.code != 0:
        failures.append((OTHER, f"exit {r.code}: {_last_line(r.stderr)}"))
    return failures


def with_x0(text: bytes) -> bytes:
    return b'{"id": 1, "x0": ' + text + b', "x1": 0.5, "x2": 0.5, "x3": 0.5}'


def binary_junk() -> bytes:
    data = np.random.default_rng(7).integers(0, 256, 300, dtype=np.uint8).tobytes()
    return data.replace(b"\n", b"").replace(b"\r", b"")


# (name, middle line, expectation of its output). Each stream is: good, middle, good.
STREAM_MIDDLES = [
    ("int-400-digits", with_x0(b"9" * 400), "error"),  # overflows a float
    ("int-5000-digits", with_x0(b"9" * 5000), "error"),  # beyond Python's int digits limit
    ("nested-100000", b"[" * 100_000, "error"),  # recursion depth
    ("string-1mb", with_x0(b'"' + b"a" * (1 << 20) + b'"'), "error"),
    ("invalid-utf8", with_x0(b'"\xc3\x28\xff\xfe"'), "error"),
    ("binary-junk", binary_junk(), "error"),
    # Extreme but finite values: scored, flagged; the score finite or null, never NaN.
    ("all-1e300", b'{"id": 1, "x0": 1e300, "x1": 1e300, "x2": 1e300, "x3": 1e300}', "anomaly"),
    ("array-1e200", b"[1e200, -1e200, 0, 0]", "anomaly"),
    ("nan-literal", b"NaN", "error"),
    ("nan-field", with_x0(b"NaN"), "error"),
    ("empty-object", b"{}", "error"),
    ("array-wrong-length", b"[1, 2, 3]", "error"),
    ("json-string", b'"hello"', "error"),
    ("json-null", b"null", "error"),
]


def stream_job(lines: list[bytes], expect: list[str]):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        stdin = b"".join(line + b"\n" for line in lines)
        return check_stream(streammix("score", fx.model, "-", cwd=ws, stdin=stdin), expect)
    return job


def middle_job(middle: bytes, expect: str):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        lines = [fx.record(0, 0), middle, fx.record(2, 2)]
        return stream_job(lines, ["scored", expect, "scored"])(fx, ws)
    return job


def junk_first_job(fx: Fixture, ws: Path) -> list[Failure]:
    # A junk first line, then 3 good JSON records: 4 outputs, the 3 good ones scored.
    lines = [b"%%% not a record %%%", *(fx.record(i, i) for i in range(3))]
    return stream_job(lines, ["error", "scored", "scored", "scored"])(fx, ws)


def csv_rows(fx: Fixture, rows) -> list[bytes]:
    return [f"{i}," + ",".join(repr(float(v)) for v in fx.X[i]) for i in rows]


def csv_long_field_job(fx: Fixture, ws: Path) -> list[Failure]:
    # CSV: header, good row, a row with a 140 000-character field, good row: 3 outputs.
    good = csv_rows(fx, [0, 2])
    lines = ["id," + ",".join(FEATURES), good[0], "1," + "a" * 140_000 + ",0.5,0.5,0.5",
             good[1]]
    return stream_job([line.encode() for line in lines], ["scored", "error", "scored"])(fx, ws)


def csv_header_only_job(fx: Fixture, ws: Path) -> list[Failure]:
    # CSV with the header only: no output line, exit 0.
    return stream_job([("id," + ",".join(FEATURES)).encode()], [])(fx, ws)


# -- 4. folder watch -------------------------------------------------------------------------
def watch(fx: Fixture, ws: Path, incoming: Path, outdir: Path) -> Run:
    return streammix("score", fx.model, "--watch", incoming, "-o", outdir, "--once",
                     "--poll-interval", 0, cwd=ws)


def scored(outdir: Path) -> dict[str, np.ndarray]:
    """The ids in each scores file of ``outdir``."""
    found = {}
    for path in sorted(outdir.glob("*.scores.parquet")):
        try:
            found[path.name] = pq.read_table(path, columns=["id"])["id"].to_numpy()
        except (OSError, KeyError, pa.ArrowException) as exc:
            found[path.name] = np.array([-1])
            print(f"  note: {path} unreadable ({exc})", file=sys.stderr)
    return found


def check_watch(r: Run, outdir: Path, good: dict[str, int], forbidden: list[str]
                ) -> list[Failure]:
    """Every good file scored in full, nothing from outside; exit 0 or 2 both fine."""
    failures = crashed(r)
    if failures and failures[0][0] == HANG:
        return failures
    found = scored(outdir)
    for name, rows in good.items():
        ids = found.get(f"{name[:-8]}.scores.parquet")
        if ids is None or len(ids) != rows:
            failures.append((LOST, f"{name} not scored" if ids is None
                             else f"{name}: {len(ids)} of {rows} rows"))
    for name in forbidden:
        if f"{name[:-8]}.scores.parquet" in found:
            failures.append((SILENT, f"{name} was scored"))
    if any((ids >= 900_000).any() for ids in found.values()):
        failures.append((SILENT, "ids from outside the folder copied into the output"))
    if r.code not in (0, 2) and not failures:
        failures.append((OTHER, f"exit {r.code}: {_last_line(r.stderr)}"))
    return failures


def watch_folders(fx: Fixture, ws: Path) -> tuple[Path, Path, dict[str, int]]:
    incoming, outdir = ws / "in", ws / "out"
    fx.write_parquet(incoming / "a.parquet", slice(0, 1000))
    fx.write_parquet(incoming / "z.parquet", slice(3000, 4000))
    return incoming, outdir, {"a.parquet": 1000, "z.parquet": 1000}


def watch_symlink_file_job(fx: Fixture, ws: Path) -> list[Failure]:
    # IN/link.parquet -> a Parquet file outside IN: not scored, its ids not in OUT.
    incoming, outdir, good = watch_folders(fx, ws)
    secret = fx.write_parquet(ws / "outside" / "secret.parquet", slice(0, 500),
                              id_offset=900_000)
    (incoming / "link.parquet").symlink_to(secret)
    return check_watch(watch(fx, ws, incoming, outdir), outdir, good, ["link.parquet"])


def watch_symlink_dir_job(fx: Fixture, ws: Path) -> list[Failure]:
    # IN/d.parquet -> a directory of Parquet files outside IN: not scored.
    incoming, outdir, good = watch_folders(fx, ws)
    fx.write_parquet(ws / "outside" / "secret.parquet", slice(0, 500),
                              id_offset=900_000)
    (incoming / "d.parquet").symlink_to(ws / "outside", target_is_directory=True)
    return check_watch(watch(fx, ws, incoming, outdir), outdir, good, ["d.parquet"])


def watch_fifo_job(fx: Fixture, ws: Path) -> list[Failure]:
    # IN/f.parquet is a FIFO nobody writes to: no hang; the regular files are scored.
    incoming, outdir, good = watch_folders(fx, ws)
    os.mkfifo(incoming / "f.parquet")
    return check_watch(watch(fx, ws, incoming, outdir), outdir, good, ["f.parquet"])


def watch_damaged_job(fx: Fixture, ws: Path) -> list[Failure]:
    # One damaged file (b) between good ones (a, z): the good ones, z included, are scored on
    # the first run and still are after a rerun; exit 0 or 2 either way.
    incoming, outdir, good = watch_folders(fx, ws)
    whole = fx.write_parquet(ws / "b-whole.parquet", slice(1000, 2000)).read_bytes()
    (incoming / "b.parquet").write_bytes(whole[: len(whole) // 2])
    failures = [(kind, f"first run: {why}")
                for kind, why in check_watch(watch(fx, ws, incoming, outdir), outdir, good, [])]
    failures += [(kind, f"rerun: {why}")
                 for kind, why in check_watch(watch(fx, ws, incoming, outdir), outdir, good, [])]
    return failures


def watch_progress_job(content: str):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        # A corrupt OUT/.streammix-watch.json: one "Error:" line naming it, exit 2.
        incoming, outdir, _ = watch_folders(fx, ws)
        outdir.mkdir()
        (outdir / ".streammix-watch.json").write_text(content)
        return expect_error(watch(fx, ws, incoming, outdir), names=".streammix-watch.json")
    return job


# -- 5. bad command-line input ----------------------------------------------------------------
def fit_into(fx: Fixture, ws: Path, data, *extra, timeout=TIMEOUT) -> Run:
    return streammix("fit", data, "-k", 3, "-o", ws / "m.npz", "--seed", 0, *extra, cwd=ws,
                     timeout=timeout)


def scheduler_job(fx: Fixture, ws: Path) -> list[Failure]:
    # fit --scheduler notanaddress: exit 2 in one line, within 20 s.
    r = fit_into(fx, ws, fx.data, "--scheduler", "notanaddress", timeout=QUICK)
    return expect_error(r, output=ws / "m.npz")


def missing_data_job(command: str):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        # A data path that does not exist: exit 2 naming it.
        missing = ws / "no-such-data"
        if command == "fit":
            return expect_error(fit_into(fx, ws, missing), names="no-such-data")
        r = streammix("score", fx.model, missing, "-o", ws / "s.parquet", cwd=ws)
        return expect_error(r, names="no-such-data", output=ws / "s.parquet")
    return job


def mixed_schema_job(change: str):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        # A folder of two files whose schemas differ: exit 2.
        folder = ws / "mixed"
        fx.write_parquet(folder / "part-0.parquet", slice(0, 5000))
        table = pq.read_table(fx.write_parquet(ws / "tmp.parquet", slice(5000, 10000)))
        if change == "extra-column":
            table = table.append_column("x4", table["x0"])
        else:  # a bool column in place of x1
            table = table.set_column(2, "x1", pa.array(table["x1"].to_numpy() > 0))
        pq.write_table(table, folder / "part-1.parquet")
        return expect_error(fit_into(fx, ws, folder), output=ws / "m.npz")
    return job


def string_column_job(fx: Fixture, ws: Path) -> list[Failure]:
    # A Parquet column of strings: exit 2 naming the column.
    table = pq.read_table(fx.write_parquet(ws / "tmp.parquet", slice(0, 5000)))
    words = pa.array([f"row-{i}" for i in range(len(table))])
    pq.write_table(table.set_column(2, "x1", words), ws / "strings.parquet")
    return expect_error(fit_into(fx, ws, ws / "strings.parquet"), names="x1",
                        output=ws / "m.npz")


def zarr_no_features_job(fx: Fixture, ws: Path) -> list[Failure]:
    # A Zarr array of shape (100, 0): exit 2.
    import zarr

    zarr.create_array(store=str(ws / "empty.zarr"), shape=(100, 0), chunks=(100, 1),
                      dtype="float64")
    return expect_error(fit_into(fx, ws, ws / "empty.zarr"), output=ws / "m.npz")


def pipe_job(args, reader, stdin=None):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        # stdout closed early by the reader: no "Broken pipe" or traceback on stderr.
        full = [fx.model if a == "MODEL" else a for a in args]
        data = stdin(fx) if stdin else None
        r, _ = piped(full, reader, ws, stdin=data)
        failures = crashed(r)
        if not failures and re.search(r"broken ?pipe|exception ignored", r.stderr, re.I):
            failures.append((OTHER, f"stderr: {_last_line(r.stderr)}"))
        return failures
    return job


def many_records(fx: Fixture) -> bytes:
    return b"".join(fx.record(i, i) + b"\n" for i in range(5000))


def quiet_fit_job(fx: Fixture, ws: Path) -> list[Failure]:
    # fit -q that stops at --max-iter 1 unconverged: exit 0 and nothing at all on stderr.
    r = fit_into(fx, ws, fx.data, "--max-iter", 1, "-q")
    failures = crashed(r)
    if failures:
        return failures
    if r.code != 0:
        return [(OTHER, f"exit {r.code}: {_last_line(r.stderr)}")]
    if r.stderr.strip():
        return [(OTHER, f"-q, yet stderr says: {r.stderr.strip().splitlines()[0][:100]}")]
    return []


# -- 6. scoring fails closed --------------------------------------------------------------------
def api_failures(r: Run, out) -> list[Failure]:
    """Why an api() call gave no result (a crash, or an exception), or [] when it did."""
    failures = crashed(r)
    if failures or out is None:
        return failures or [(OTHER, f"no result (exit {r.code})")]
    if "result" not in out:
        kind = TRACEBACK if "unexpected" in out else OTHER
        return [(kind, f"raised {out.get('unexpected') or out['error']}: {out['message'][:100]}")]
    return []


def api_score_job(row: list[float]):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        # sm.load(model).score_samples(row): a number (not NaN) below the anomaly threshold.
        r, out = api(f"""
            model = sm.load({str(fx.model)!r})
            score = float(model.score_samples(np.array([{row!r}]))[0])
            return {{"score": score, "threshold": float(model.anomaly_threshold_)}}
        """, ws)
        failures = api_failures(r, out)
        if failures:
            return failures
        score, threshold = out["result"]["score"], out["result"]["threshold"]
        if math.isnan(score):
            return [(SILENT, "score is NaN")]
        if not score < threshold:
            return [(SILENT, f"score {score} is not below the threshold {threshold:.4g}")]
        return []
    return job


def api_predict_job(row: list[float]):
    def job(fx: Fixture, ws: Path) -> list[Failure]:
        # AnomalyScorer(model).predict(row) == -1: an extreme row is an anomaly.
        r, out = api(f"""
            scorer = sm.AnomalyScorer(sm.load({str(fx.model)!r}))
            return int(scorer.predict(np.array([{row!r}]))[0])
        """, ws)
        failures = api_failures(r, out)
        if failures:
            return failures
        return [] if out["result"] == -1 else [(SILENT, f"predict gave {out['result']}")]
    return job


def scaled_dataset_job(fx: Fixture, ws: Path) -> list[Failure]:
    # streammix score M DATA on the data times 1e300: exit 0, every row flagged, no NaN score.
    data = fx.write_parquet(ws / "scaled" / "part-0.parquet", slice(0, 2000), scale=1e300)
    output = ws / "s.parquet"
    r = streammix("score", fx.model, data.parent, "-o", output, cwd=ws)
    failures = crashed(r)
    if failures:
        return failures
    if r.code != 0 or not output.exists():
        return [(OTHER, f"exit {r.code}: {_last_line(r.stderr)}")]
    table = pq.read_table(output)
    scores, flagged = table["score"].to_numpy(), table["anomaly"].to_numpy()
    if np.isnan(scores).any():
        failures.append((SILENT, f"{int(np.isnan(scores).sum())} NaN scores"))
    if flagged.sum() < len(flagged):
        failures.append((SILENT, f"{int(flagged.sum())} of {len(flagged)} rows flagged "
                                 f"({_last_line(r.stderr)})"))
    return failures


# -- the sweep -------------------------------------------------------------------------------
@dataclass
class Job:
    category: str
    name: str
    fn: Callable  # (fixture, workspace) -> failures, or {case name: failures}


def jobs() -> list[Job]:
    out = []
    # 1. Tampered model files, each under info, predict, score and plot.
    out += [Job("1 model files (CLI)", name, model_file_job(name, build, how))
            for name, build, how in MODEL_TAMPERS]
    # 1b. The same files through the API: an allowed exception from load or use.
    out += [Job("1b model files (API)", name, model_api_job(name, build, how))
            for name, build, how in MODEL_TAMPERS]
    # 2. Tampered checkpoint directories.
    out += [Job("2 checkpoints", name, checkpoint_job(tamper, how))
            for name, tamper, how in CHECKPOINT_CASES]
    # 3. Malformed stdin streams to `streammix score MODEL -`.
    out += [Job("3 stdin streams", name, middle_job(middle, expect))
            for name, middle, expect in STREAM_MIDDLES]
    out += [Job("3 stdin streams", "junk-first-line", junk_first_job),
            Job("3 stdin streams", "csv-field-140k", csv_long_field_job),
            Job("3 stdin streams", "csv-header-only", csv_header_only_job)]
    # 4. Folder watch.
    out += [Job("4 folder watch", "symlink-file-outside", watch_symlink_file_job),
            Job("4 folder watch", "symlink-dir-outside", watch_symlink_dir_job),
            Job("4 folder watch", "fifo", watch_fifo_job),
            Job("4 folder watch", "damaged-file-between", watch_damaged_job),
            Job("4 folder watch", "progress-not-json", watch_progress_job("{not json")),
            Job("4 folder watch", "progress-json-list", watch_progress_job("[1, 2]"))]
    # 5. Bad command-line input.
    out += [Job("5 bad CLI input", "fit-scheduler-notanaddress", scheduler_job),
            Job("5 bad CLI input", "fit-missing-data", missing_data_job("fit")),
            Job("5 bad CLI input", "score-missing-data", missing_data_job("score")),
            Job("5 bad CLI input", "schema-extra-column", mixed_schema_job("extra-column")),
            Job("5 bad CLI input", "schema-bool-column", mixed_schema_job("bool-column")),
            Job("5 bad CLI input", "string-column", string_column_job),
            Job("5 bad CLI input", "zarr-100x0", zarr_no_features_job),
            Job("5 bad CLI input", "info|head-2", pipe_job(["info", "MODEL"], ["head", "-2"])),
            # Not in the brief: a reader that reads nothing, and a long stream into head.
            Job("5 bad CLI input", "info|true", pipe_job(["info", "MODEL"], ["true"])),
            Job("5 bad CLI input", "score-stdin|head-2",
                pipe_job(["score", "MODEL", "-"], ["head", "-2"], stdin=many_records)),
            Job("5 bad CLI input", "fit-q-no-converge", quiet_fit_job)]
    # 6. Extreme values are anomalies, never NaN.
    extreme, huge = [1e200, -1e200, 0.0, 0.0], [1e300] * 4
    out += [Job("6 fail-closed scoring", "api-score_samples-1e200", api_score_job(extreme)),
            Job("6 fail-closed scoring", "api-score_samples-1e300", api_score_job(huge)),
            Job("6 fail-closed scoring", "api-predict-1e200", api_predict_job(extreme)),
            Job("6 fail-closed scoring", "api-predict-1e300", api_predict_job(huge)),
            Job("6 fail-closed scoring", "cli-score-data-x1e300", scaled_dataset_job)]
    return out


def run_job(job: Job, fx: Fixture, ws: Path) -> dict[str, list[Failure]]:
    ws.mkdir(parents=True)
    began = time.monotonic()
    try:
        result = job.fn(fx, ws)
    except Exception as exc:  # a bug of the sweep, not of streammix: say so
        traceback.print_exc()
        result = [(OTHER, f"sweep error: {type(exc).__name__}: {exc}")]
    if not isinstance(result, dict):
        result = {job.name: result}
    print(f"  {time.monotonic() - began:5.1f} s  {job.category}: {job.name}"
          f"{'  FAIL' if any(result.values()) else ''}", file=sys.stderr, flush=True)
    return result


def report(results: list[tuple[str, str, list[Failure]]]) -> int:
    categories = list(dict.fromkeys(category for category, _, _ in results))
    header = f"{'category':<24} {'cases':>5} " + " ".join(f"{k:>10}" for k in KINDS)
    print(header)
    print("-" * len(header))
    totals = dict.fromkeys(("cases", *KINDS), 0)
    for category in categories:
        rows = [failures for c, _, failures in results if c == category]
        counts = {kind: sum(any(k == kind for k, _ in f) for f in rows) for kind in KINDS}
        for key, value in (("cases", len(rows)), *counts.items()):
            totals[key] += value
        print(f"{category:<24} {len(rows):>5} " + " ".join(f"{counts[k]:>10}" for k in KINDS))
    print("-" * len(header))
    print(f"{'total':<24} {totals['cases']:>5} " + " ".join(f"{totals[k]:>10}" for k in KINDS))
    failing = [(c, name, f) for c, name, f in results if f]
    print(f"\nfailing cases ({len(failing)} of {len(results)}):")
    for category in categories:
        mine = [(name, f) for c, name, f in failing if c == category]
        if mine:
            print(f"\n[{category}]")
        for name, failures in mine:
            why = "; ".join(f"{kind}: {detail}" for kind, detail in failures)
            print(f"  {name:<34} {why[:220]}")
    return sum(totals[k] for k in KINDS)


def use_source(directory: str):
    """Sweep the ``streammix`` package in ``directory`` instead of the installed one."""
    directory = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(directory, "streammix", "cli.py")):
        sys.exit(f"--source: no streammix/cli.py in {directory}")
    ENV["PYTHONPATH"] = os.pathsep.join(p for p in (directory, ENV.get("PYTHONPATH")) if p)
    CLI[:] = [sys.executable, "-m", "streammix.cli"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when any case fails")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-k", "--select", help="only cases whose category or name contains this")
    parser.add_argument("--source", help="directory holding the streammix package to sweep "
                                         "(default: the installed one)")
    args = parser.parse_args()
    if args.source:
        use_source(args.source)

    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="streammix-sweep-"))
    try:
        where = run([sys.executable, "-c", "import streammix; print(streammix.__file__)"],
                    root).stdout.decode().strip()
        print(f"sweeping {where} ({' '.join(CLI)}) in {root}", file=sys.stderr)
        fx = build_fixture(root)
        todo = [job for job in jobs()
                if not args.select or args.select in f"{job.category} {job.name}"]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_job, job, fx, root / "cases" / f"{i:03d}")
                       for i, job in enumerate(todo)]
            results = [(job.category, name, failures)
                       for job, future in zip(todo, futures, strict=True)
                       for name, failures in future.result().items()]
        print(f"\nstreammix swept: {where}\n")
        total = report(results)
        print(f"\nwall time {time.monotonic() - began:.0f} s ({args.jobs} at once)")
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if args.strict and total else 0)


if __name__ == "__main__":
    main()
