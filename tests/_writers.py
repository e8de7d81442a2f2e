"""Two jobs writing one output at once: this process and a child process, run after run.

Each run starts both jobs together (job A here, job B in the child, on other
data: 6 parts against 4) and makes them overlap for certain, without timing:
whichever job reaches its commit first waits there until the other job has
tried to take the output (its ``prepare`` has returned or raised). One job,
and one only, may then write the output; what is committed must be exactly
that job's parts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np

import streammix as sm
from streammix.io.output import PartitionedOutput
from streammix.scoring import predict_to_parquet
from tests.conftest import make_blobs, write_table

ROOT = Path(__file__).resolve().parent.parent


def overlapping(me: str, other: str, state: dict):
    """``prepare`` and ``commit`` of :class:`PartitionedOutput` that make the jobs overlap:
    ``prepare`` leaves a mark in ``state["dir"]`` (taken or refused), ``commit`` waits
    for the other job's mark."""
    prepare, commit = PartitionedOutput.prepare, PartitionedOutput.commit

    def marked_prepare(self):
        try:
            return prepare(self)
        finally:
            Path(state["dir"], me).touch()

    def waiting_commit(self, parts, summary):
        deadline = time.monotonic() + 120
        while not Path(state["dir"], other).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {other} never tried to take the output")
            time.sleep(0.002)
        return commit(self, parts, summary)

    return marked_prepare, waiting_commit


CHILD = """
import json, sys
from tests._writers import overlapping
import streammix as sm
from streammix.io.output import PartitionedOutput
from streammix.scoring import predict_to_parquet
model_path, data, out, options = sys.argv[1:5]
options = json.loads(options)
model = sm.load(model_path, options)
model.set_params(storage_options=options, chunk_size=100)  # not in the file
state = {}
PartitionedOutput.prepare, PartitionedOutput.commit = overlapping("B", "A", state)
print("ready", flush=True)
for line in sys.stdin:
    state["dir"] = line.strip()
    try:
        predict_to_parquet(model, data, out)
        print(json.dumps({"ok": True}), flush=True)
    except sm.StreammixError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
"""


class TwoWriters:
    """Job A (this process) and job B (a child) predicting to ``out`` (a folder or prefix)."""

    def __init__(self, tmp_path, out: str, storage_options=None):
        self.tmp_path, self.out, self.options = tmp_path, out, storage_options
        self.fs = fsspec.filesystem("file") if "://" not in out else \
            fsspec.filesystem(out.split("://")[0], **storage_options, skip_instance_cache=True)
        X = make_blobs()
        Y = make_blobs(n=400, seed=1, offset=0.5)
        self.data = {"A": str(write_table(tmp_path / "a.parquet", X, 100)),
                     "B": str(write_table(tmp_path / "b.parquet", Y, 100))}
        if "://" in out:  # the data in the same store: a model has one set of storage options
            for job, local in list(self.data.items()):
                self.data[job] = f"{out.rstrip('/')}-data/{job}.parquet"
                self.fs.put(local, self.data[job])
        self.model = sm.KMeans(3, random_state=0, n_init=1, chunk_size=100,
                               storage_options=storage_options).fit(X)
        self.expected = {"A": self.model.predict(X), "B": self.model.predict(Y)}
        self.model.save(tmp_path / "model.npz")
        self.errors = open(tmp_path / "child.err", "w")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "model.npz"), self.data["B"], out,
             json.dumps(storage_options)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errors, text=True, env=env, cwd=ROOT)
        assert self.child.stdout.readline().strip() == "ready", self._child_errors()

    def _child_errors(self) -> str:
        self.errors.flush()
        return (self.tmp_path / "child.err").read_text()[-3000:]

    def close(self):
        self.child.stdin.close()
        self.child.wait(timeout=60)
        self.errors.close()

    def run(self, monkeypatch, number: int) -> dict:
        """One run: both jobs at once; ``{"A": None or error, "B": None or error}``."""
        state = {"dir": str(self.tmp_path / f"run-{number}")}
        os.makedirs(state["dir"])
        prepare, commit = overlapping("A", "B", state)
        with monkeypatch.context() as patch:
            patch.setattr(PartitionedOutput, "prepare", prepare)
            patch.setattr(PartitionedOutput, "commit", commit)
            self.child.stdin.write(state["dir"] + "\n")
            self.child.stdin.flush()
            try:
                predict_to_parquet(self.model, self.data["A"], self.out)
                mine = None
            except sm.StreammixError as exc:
                mine = str(exc)
        line = self.child.stdout.readline()
        assert line, self._child_errors()
        theirs = json.loads(line)
        return {"A": mine, "B": None if theirs["ok"] else theirs["error"]}

    def committed(self) -> tuple[list[str], dict]:
        """Every object or file under the output (relative names), and its manifest."""
        self.fs.invalidate_cache()
        root = self.fs._strip_protocol(self.out).rstrip("/") + "/"
        names = sorted(p[len(root):] for p in self.fs.find(root, withdirs=True)
                       if len(p) > len(root))
        return names, json.loads(self.fs.cat_file(root + "_SUCCESS"))

    def check(self, result: dict, lock_file: bool) -> str:
        """The committed output is exactly one job's; the other was refused. The winner."""
        refused = [job for job, error in result.items() if error is not None]
        assert len(refused) == 1, result  # one job writes; the other is refused
        winner = "B" if refused == ["A"] else "A"
        error = result[refused[0]]
        assert f"output {self.out.rstrip('/')} is in use by " in error, error
        assert "wait for that job to finish" in error, error
        names, manifest = self.committed()
        parts = [f"part-{i:06d}.parquet" for i in range(len(self.expected[winner]) // 100)]
        assert names == sorted(["_SUCCESS", *(["_lock"] if lock_file else []), *parts]), names
        assert [p["name"] for p in manifest["parts"]] == parts
        labels = sm.read_parquet(self.out, storage_options=self.options)
        got = np.concatenate([block[:, 0] for chunk in labels.plan()
                              for _, block in labels.read_chunk(chunk)])
        np.testing.assert_array_equal(got, self.expected[winner])
        return winner


KILLED = """
import json, os, signal, sys
import streammix as sm
from streammix.io.output import PartitionedOutput
from streammix.scoring import predict_to_parquet
write, count = PartitionedOutput.write_part, [0]
def write_then_die(self, index, table):
    result = write(self, index, table)
    count[0] += 1
    if count[0] == 3:  # three parts staged, the job is killed
        os.kill(os.getpid(), signal.SIGKILL)
    return result
PartitionedOutput.write_part = write_then_die
options = json.loads(sys.argv[4])
model = sm.load(sys.argv[1], options).set_params(chunk_size=100, storage_options=options)
predict_to_parquet(model, sys.argv[2], sys.argv[3])
"""


def kill_a_job(model_path, data, out, storage_options=None):
    """Run ``predict -o out`` in a child killed (SIGKILL) once three parts are staged."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    child = subprocess.run([sys.executable, "-c", KILLED, str(model_path), str(data), out,
                            json.dumps(storage_options)],
                           capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert child.returncode == -signal.SIGKILL, child.stderr
