"""Machinery of the robustness tests: commands in watched subprocesses, judged in one line.

Every command runs in a subprocess of its own session, with a pinned environment, its
own timeout and a memory watchdog, so a test survives what it provokes. How a run
misses its expectation is one of the kinds below, each with a reason (``Failure``); a
test fails with ``kind: why`` for each, as one line.

  tracebacks  "Traceback" on a command's stderr, or an API exception that is not a
              StreammixError, ValueError or TypeError where an error is expected
  silent      a wrong result without an error: exit 0 where a refusal or a flag was
              due, nothing flagged, a NaN score, output that is not strict JSON
  lost        records (or watched files) that go in and do not come out
  hangs       a command still running at its timeout (60 s; 20 s where it must not
              wait on a network connection)
  other       an expectation missed another way: exit code, an error of several
              lines or not naming the file, peak memory, noise on stderr

Nothing networked but 127.0.0.1 (a port where nothing listens); no Dask cluster.

The cases are slow (each command starts a Python that imports streammix), so the
``sweep`` fixture runs the selected cases two at a time (``JOBS``), ahead of the tests
that report them, in their order: a test parametrized with a ``Case`` as ``case``
calls ``check(sweep, case)``, which waits for that case's failures and fails with them.
The children import the streammix that pytest imports (this checkout); to test another
one, run these tests from a copy of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammix

TIMEOUT = 60.0  # seconds for any command
QUICK = 20.0  # seconds for a command that must not wait on a network connection
BOMB_LIMIT_MB = 500  # peak RSS allowed while refusing a zip bomb
KILL_MB = 3000  # a child above this is killed: the tests must not take the machine down
BOMB_ITEMS = 250_000_000  # float64 zeros: ~2 GB inflated from ~2 MB deflated
FEATURES = [f"x{j}" for j in range(4)]
# Cases run at once: 2 (1 on one core); STREAMMIX_ROBUSTNESS_JOBS=N for more on a busy machine,
# where each command waits for a core more than it runs.
JOBS = int(os.environ.get("STREAMMIX_ROBUSTNESS_JOBS") or min(2, os.cpu_count() or 1))

TRACEBACK, SILENT, LOST, HANG, OTHER = "tracebacks", "silent", "lost", "hangs", "other"

Failure = tuple[str, str]  # (kind, why)

# The children run the streammix this process imports (this checkout), whatever is
# installed: its parent directory goes first on their PYTHONPATH.
SOURCE = str(Path(streammix.__file__).resolve().parents[1])
_ENTRY = Path(sys.executable).with_name("streammix")
CLI = [str(_ENTRY)] if _ENTRY.exists() else [sys.executable, "-m", "streammix.cli"]

# Children get a pinned environment: a UTF-8 locale with strict decoding of stdin, as in
# en_US.UTF-8 (C.UTF-8 alone would give Python's lenient surrogateescape, which hides what
# invalid UTF-8 does to most users), no inherited Dask configuration (a DASK_SCHEDULER_ADDRESS
# would connect somewhere), no warning overrides, a headless matplotlib.
ENV = {k: v for k, v in os.environ.items()
       if not k.startswith("DASK_") and k not in ("PYTHONUTF8", "PYTHONWARNINGS", "PYTHONDEVMODE")}
ENV.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", PYTHONIOENCODING="utf-8:strict", MPLBACKEND="Agg",
           PYTHONHASHSEED="0",
           PYTHONPATH=os.pathsep.join(p for p in (SOURCE, os.environ.get("PYTHONPATH")) if p))

# Set when the session ends early (Ctrl-C, -x): every running child is killed.
_stopping = threading.Event()


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


def _status_mb(pid, field) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb(pid) -> float:
    return _status_mb(pid, "VmRSS:")


with open("/proc/self/cmdline", "rb") as _own:
    _OWN_CMDLINE = _own.read()


def _peak_after_exec_mb(pid) -> float:
    """The child's peak RSS so far (VmHWM) once it has exec'd; 0 while it is still the
    forked copy of this process (the same command line).

    Not wait4's ru_maxrss: Linux carries the peak of the forked copy of this (large)
    test process across the exec, so every child would report this process's size.
    """
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if handle.read() == _OWN_CMDLINE:
                return 0.0
    return _status_mb(pid, "VmHWM:")


def run(args, cwd, *, stdin: bytes | None = None, timeout=TIMEOUT) -> Run:
    """Run ``args`` in its own session; stdout/stderr go to files (no pipe can fill up).

    The child's peak RSS is sampled every 20 ms (see :func:`_peak_after_exec_mb`); it is
    killed (with its process group) at ``timeout`` or above ``KILL_MB`` of RSS. The
    files stay in ``cwd/.sweep`` for a look after a failure.
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
        peak = 0.0
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _peak_after_exec_mb(proc.pid))
            if not (timed_out or killed):
                timed_out = time.monotonic() - began > timeout
                killed = not timed_out and _rss_mb(proc.pid) > KILL_MB
                if timed_out or killed or _stopping.is_set():  # the group id is its pid
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.02)
        seconds = time.monotonic() - began
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    return Run(code, out_path.read_bytes(), err_path.read_text(errors="replace"), seconds,
               peak, timed_out, killed)


def streammix_cli(*args, cwd, **kwargs) -> Run:
    """``streammix ARGS`` (the console script)."""
    return run([*CLI, *args], cwd, **kwargs)


def piped(args, reader: list[str], cwd, *, stdin: bytes | None = None) -> Run:
    """``streammix ARGS | READER``; returns the streammix run (its stdout not kept)."""
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
        while any(proc.poll() is None for proc in (producer, consumer)):
            timed_out = time.monotonic() - began > TIMEOUT
            if timed_out or _stopping.is_set():
                for proc in (producer, consumer):
                    if proc.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                break
            time.sleep(0.02)
    return Run(producer.returncode, b"", err_path.read_text(errors="replace"),
               time.monotonic() - began, 0.0, timed_out)


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
    """Run ``body`` (the inside of a function returning JSON-able data) in a fresh Python.

    Returns the run and ``{"result": ...}``, ``{"error": TYPE, "message": ...}`` for an
    allowed exception, ``{"unexpected": TYPE, ...}`` for any other, or None (no answer).
    """
    program = API_PROGRAM.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    r = run([sys.executable, "-c", program], cwd, timeout=timeout)
    for line in r.stdout.decode(errors="replace").splitlines():
        if line.startswith("SWEEP-RESULT "):
            return r, json.loads(line.split(" ", 1)[1])
    return r, None


# -- judging runs --------------------------------------------------------------------------
def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def crashed(r: Run) -> list[Failure]:
    """A hang, a memory kill or a traceback: then nothing else about the run is judged."""
    if r.timed_out:
        return [(HANG, f"killed after {r.seconds:.0f} s")]
    if r.memory_killed:
        return [(OTHER, f"killed at {KILL_MB} MB of RSS")]
    if "Traceback" in r.stderr:
        return [(TRACEBACK, last_line(r.stderr))]
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
        said = last_line(r.stderr) or last_line(r.stdout.decode(errors="replace"))
        return [*failures, (SILENT, f"exit 0 ({said[:100]})" if said else "exit 0")]
    lines = r.stderr.strip().splitlines()
    if r.code != 2:
        failures.append((OTHER, f"exit {r.code}: {last_line(r.stderr)}"))
    elif len(lines) != 1 or not lines[0].startswith("Error: "):
        failures.append((OTHER, f"stderr is {len(lines)} lines, not one 'Error:' line: "
                                f"{last_line(r.stderr)}"))
    elif names and names not in lines[0]:
        failures.append((OTHER, f"error does not name {names}: {lines[0][:120]}"))
    if output is not None and output.exists():
        failures.append((OTHER, f"failed but left {output.name}"))
    return failures


def expect_success(r: Run) -> list[Failure]:
    """Exit 0, no traceback, no hang."""
    failures = crashed(r)
    if not failures and r.code != 0:
        failures.append((OTHER, f"exit {r.code}: {last_line(r.stderr)}"))
    return failures


def expect_api_error(r: Run, out: dict | None, *, memory_mb=None) -> list[Failure]:
    """An exception of an allowed type (StreammixError, ValueError, TypeError)."""
    failures = crashed(r)
    if memory_mb is not None and r.peak_mb > memory_mb and not r.memory_killed:
        failures.append((OTHER, f"peak RSS {r.peak_mb:.0f} MB > {memory_mb} MB"))
    if out is None:
        return failures or [(OTHER, f"no result (exit {r.code}): {last_line(r.stderr)}")]
    if "unexpected" in out:
        failures.append((TRACEBACK, f"{out['unexpected']}: {out['message'][:120]}"))
    elif "result" in out:
        failures.append((SILENT, "no error raised"))
    return failures


def api_failures(r: Run, out: dict | None) -> list[Failure]:
    """Why an api() call gave no result (a crash, or an exception), or [] when it did."""
    failures = crashed(r)
    if failures or out is None:
        return failures or [(OTHER, f"no result (exit {r.code}): {last_line(r.stderr)}")]
    if "result" not in out:
        kind = TRACEBACK if "unexpected" in out else OTHER
        return [(kind, f"raised {out.get('unexpected') or out['error']}: {out['message'][:100]}")]
    return []


def broken_pipe_noise(r: Run) -> list[Failure]:
    """A reader that went away: no traceback, no "Broken pipe" or "Exception ignored"."""
    failures = crashed(r)
    if not failures and re.search(r"broken ?pipe|exception ignored", r.stderr, re.I):
        failures.append((OTHER, f"stderr: {last_line(r.stderr)}"))
    return failures


# -- the dataset and model, shared by every case -------------------------------------------
@dataclass
class Dataset:
    root: Path
    data: Path  # Parquet folder: 20 000 rows x x0..x3, 3 components, seed 0
    model: Path  # GaussianMixture(k=3), seed 0, anomaly threshold at 1 % contamination
    X: np.ndarray  # the data's rows in memory

    def record(self, i: int, record_id: int) -> bytes:
        """Row ``i`` as a JSON record with id ``record_id``."""
        row = dict(zip(FEATURES, map(float, self.X[i]), strict=True))
        return json.dumps({"id": record_id, **row}).encode()

    def write_parquet(self, path: Path, rows: slice, *, scale=1.0, id_offset=0) -> Path:
        """Rows of the data with an ``id`` column (ids from 900 000 mark files outside)."""
        ids = np.arange(self.X.shape[0])[rows] + id_offset
        columns = {"id": ids, **{n: self.X[rows, j] * scale for j, n in enumerate(FEATURES)}}
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        return path


def build_dataset(root: Path) -> Dataset:
    """``make-data`` and ``fit`` through the command line, once for the session."""
    found = run([sys.executable, "-c", "import importlib.util as u; "
                 "print(u.find_spec('streammix').origin)"], root)
    where = found.stdout.decode().strip()
    assert where == str(Path(streammix.__file__).resolve()), \
        f"the children import another streammix: {where} ({found.stderr})"
    data, model = root / "data", root / "model.npz"
    for args in (["make-data", data, "--rows", 20000, "--features", 4, "--components", 3,
                  "--seed", 0, "-q"],
                 ["fit", data, "-k", 3, "-o", model, "--contamination", 0.01, "--seed", 0,
                  "-q"]):
        r = streammix_cli(*args, cwd=root)
        assert r.code == 0, f"setup failed: streammix {' '.join(map(str, args))}\n{r.stderr}"
    table = pq.read_table(data)
    X = np.column_stack([table[n].to_numpy() for n in FEATURES])
    return Dataset(root, data, model, X)


# -- zip surgery on model files and checkpoints ---------------------------------------------
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
    """A model file's metadata and its other entries."""
    entries = read_zip(path)
    meta = json.loads(bytes(np.load(io.BytesIO(entries.pop("__meta__.npy")))).decode())
    return meta, entries


def write_model(path, meta, entries, *, bomb=None):
    meta_entry = npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    write_zip(path, {"__meta__.npy": meta_entry, **entries}, bomb=bomb)


# -- cases, run ahead two at a time ------------------------------------------------------------
@dataclass(eq=False)
class Case:
    """One case: ``job(dataset, workspace)`` does it and returns how it failed ([] if not)."""

    name: str
    job: Callable[[Dataset, Path], list[Failure]]

    def param(self, *marks):
        return pytest.param(self, id=self.name, marks=marks)


class Sweep:
    """Runs cases in a thread pool (``JOBS`` at once), each in a fresh workspace."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._pool = concurrent.futures.ThreadPoolExecutor(JOBS, thread_name_prefix="case")
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def submit(self, case: Case):
        with self._lock:
            if id(case) not in self._futures:
                workspace = self.dataset.root / "cases" / f"{next(self._numbers):03d}-" \
                    f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', case.name)}"
                self._futures[id(case)] = self._pool.submit(self._run, case, workspace)

    def _run(self, case: Case, workspace: Path) -> tuple[list[Failure], Path]:
        workspace.mkdir(parents=True)
        return case.job(self.dataset, workspace), workspace

    def outcome(self, case: Case) -> tuple[list[Failure], Path]:
        """The case's failures (run now if it was not submitted ahead) and its workspace."""
        self.submit(case)
        return self._futures[id(case)].result()

    def close(self):
        _stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        _stopping.clear()


def check(sweep: Sweep, case: Case):
    """Fail with the case's report line: ``kind: why`` for each way it went wrong."""
    failures, workspace = sweep.outcome(case)
    if failures:
        why = "; ".join(f"{kind}: {detail}" for kind, detail in failures)
        pytest.fail(f"{case.name}: {why} (logs in {workspace})", pytrace=False)
