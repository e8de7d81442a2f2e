"""Temporaries of atomic writes that a killed process left: removed by the next writer."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

import streammix as sm
from streammix.engine.checkpoint import Checkpoint
from streammix.io.atomic import atomic_write, remove_stale_temporaries
from tests._writers import ROOT
from tests.conftest import make_blobs

KILLED = """
import os, signal, sys
from streammix.io.atomic import atomic_write
with atomic_write(sys.argv[1]) as handle:
    handle.write(b"half a file")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(path) -> str:
    """The temporary a process killed during ``atomic_write(path)`` left behind (its name)."""
    before = set(os.listdir(os.path.dirname(path)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    child = subprocess.run([sys.executable, "-c", KILLED, str(path)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    (left,) = set(os.listdir(os.path.dirname(path))) - before
    return left


def _names(folder):
    return sorted(os.listdir(folder))


def test_a_snapshot_temporary_of_a_killed_scorer_is_removed_when_scoring_starts(tmp_path):
    X = make_blobs()
    model = sm.GaussianMixture(2, random_state=0).fit(X)
    scorer = sm.AnomalyScorer(model, contamination=0.05).fit(X)
    snapshot = tmp_path / "s.npz"
    left = killed_write(snapshot)
    assert left.startswith(".s.npz.") and left.endswith(".tmp")
    kept = [".notes.tmp", ".s.npz.tmp", "s.npz.1.tmp", ".other.npz.12345@00000000.abcdefgh.tmp"]
    for name in kept:  # not temporaries of this snapshot
        (tmp_path / name).write_bytes(b"x")
    scorer.adapt(snapshot=snapshot)
    assert _names(tmp_path) == sorted(kept)
    assert not snapshot.exists()  # nothing to resume from: the half file was no snapshot


def test_only_temporaries_whose_writer_is_gone_are_removed(tmp_path):
    target = tmp_path / "state.json"
    dead = killed_write(target)
    with atomic_write(target) as handle:  # a write under way in this (live) process
        handle.write(b"{}")
        (live,) = [n for n in _names(tmp_path) if n.startswith(".state.json.") and n != dead]
        here = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
        elsewhere = "0" * 8 if here != "0" * 8 else "1" * 8
        fresh, old = (f".state.json.{os.getpid()}@{elsewhere}.{s}.tmp"
                      for s in ("freshabc", "oldabcde"))
        for name in (fresh, old):  # a writer on another host sharing the folder
            (tmp_path / name).write_bytes(b"x")
        hours_ago = time.time() - 7200
        os.utime(tmp_path / old, (hours_ago, hours_ago))
        assert sorted(remove_stale_temporaries(target)) == sorted([dead, old])
        assert _names(tmp_path) == sorted([live, fresh])
    assert _names(tmp_path) == sorted([fresh, "state.json"])
    assert remove_stale_temporaries(target, held=True) == [fresh]  # under a lock all go
    assert _names(tmp_path) == ["state.json"]


def test_a_checkpoint_removes_its_own_temporaries_and_nothing_else(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    left = killed_write(folder / "loop-000001.000003.npz")
    (folder / ".notes.tmp").write_bytes(b"the user's")
    spec = {"estimator": "X", "data": {}, "params": {}}
    with Checkpoint(folder, spec) as checkpoint:
        checkpoint.record_pass(np.arange(3.0))
    names = _names(folder)
    assert left not in names and ".notes.tmp" in names
    assert names == [".notes.tmp", "checkpoint.json", "lock", "pass-000000.npz"]


def test_the_watchers_progress_file_and_a_parquet_output_clean_their_temporaries(tmp_path):
    from streammix.scoring import score_to_parquet, watch
    from streammix.scoring.watch import PROGRESS_FILE

    X = make_blobs()
    scorer = sm.AnomalyScorer(sm.GaussianMixture(2, random_state=0).fit(X),
                              contamination=0.05).fit(X)
    incoming, scored = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()
    scored.mkdir()
    left = killed_write(scored / PROGRESS_FILE)
    watch(scorer, incoming, scored, once=True)
    assert left not in os.listdir(scored)
    output = tmp_path / "scores.parquet"
    left = killed_write(output)
    score_to_parquet(scorer, X, output)
    assert left not in os.listdir(tmp_path) and output.exists()
