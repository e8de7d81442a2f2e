"""Tampered checkpoint directories: fit with --checkpoint, damage it, fit again.

A damaged or altered state is refused (exit 2, one "Error:" line, no model written),
never resumed from; a zip bomb is refused within 500 MB of peak RSS. A lock file of
garbage neither crashes nor hangs the fit: it is taken over (the same model as the
first fit) or refused in one line.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from ._harness import (
    BOMB_LIMIT_MB,
    OTHER,
    SILENT,
    Case,
    Dataset,
    Failure,
    check,
    crashed,
    expect_error,
    last_line,
    npy,
    read_zip,
    streammix_cli,
    write_zip,
)


def fit_args(dataset: Dataset, output, checkpoint):
    return ["fit", dataset.data, "-k", 3, "-o", output, "--seed", 0, "--max-iter", 3,
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
    keys = state_arrays(skeleton, "means")
    assert keys, f"no means in the state of {path.name}: the test no longer fits the format"
    return entries, keys


# -- tampering ----------------------------------------------------------------------------------
def shift_loop_means(checkpoint: Path):
    """The last loop state's means + 1000, still a valid npz."""
    path = last_loop(checkpoint)
    entries, keys = loop_means(path)
    for key in keys:
        entries[f"{key}.npy"] = npy(np.load(io.BytesIO(entries[f"{key}.npy"])) + 1000)
    write_zip(path, entries)


def loop_state_int_list(checkpoint: Path):
    """The last loop file's __state__ JSON is [1, 2, 3]."""
    path = last_loop(checkpoint)
    entries = read_zip(path)
    entries["__state__.npy"] = npy(np.frombuffer(b"[1, 2, 3]", dtype=np.uint8))
    write_zip(path, entries)


def json_int_list(checkpoint: Path):
    """checkpoint.json is [1, 2, 3]."""
    (checkpoint / "checkpoint.json").write_text("[1, 2, 3]\n")


def bomb_loop_means(checkpoint: Path):
    """The last loop state's means entry inflates to ~2 GB."""
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


def refit(dataset: Dataset, ws: Path, tamper):
    """Fit with --checkpoint (3 iterations), ``tamper`` with the directory, fit again.

    Returns the setup's failure, or the second run and the paths of both models.
    """
    checkpoint, first, second = ws / "ckpt", ws / "first.npz", ws / "second.npz"
    r = streammix_cli(*fit_args(dataset, first, checkpoint), cwd=ws)
    if r.code != 0:
        return [(OTHER, f"setup fit failed: {last_line(r.stderr)}")], None, first, second
    tamper(checkpoint)
    return [], streammix_cli(*fit_args(dataset, second, checkpoint), cwd=ws), first, second


# -- refused --------------------------------------------------------------------------------------
def refused_case(name, tamper, *, bomb=False) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        setup, r, first, second = refit(dataset, ws, tamper)
        if setup:
            return setup
        failures = expect_error(r, output=second,
                                memory_mb=BOMB_LIMIT_MB if bomb else None)
        if r.code == 0 and second.exists():  # say which kind of silence
            failures = [(SILENT, "resumed from the tampered state: a different model")] \
                if not same_model(first, second) else \
                [(OTHER, "not refused (the model is the first fit's)")]
        return failures
    return Case(name, job)


@pytest.mark.parametrize("case", [
    refused_case("loop-means-shifted", shift_loop_means).param(),
    refused_case("loop-state-int-list", loop_state_int_list).param(),
    refused_case("checkpoint-json-int-list", json_int_list).param(),
    refused_case("loop-zip-bomb", bomb_loop_means, bomb=True).param(),
])
def test_tampered_checkpoint_is_refused(case, sweep):
    check(sweep, case)


# -- a lock of garbage -----------------------------------------------------------------------------
def lock_case(name, text) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        setup, r, first, second = refit(dataset, ws, lock_holding(text))
        if setup:
            return setup
        failures = crashed(r)
        if failures or r.code == 2:
            return failures or expect_error(r)
        if r.code != 0:
            return [(OTHER, f"exit {r.code}: {last_line(r.stderr)}")]
        return [] if same_model(first, second) else \
            [(SILENT, "a different model than the first fit")]
    return Case(name, job)


@pytest.mark.parametrize("case", [
    lock_case("lock-garbage-text", "garbage\n").param(),
    lock_case("lock-pid-1e20", "100000000000000000000 somehost\n").param(),
    lock_case("lock-pid-negative", "-1 somehost\n").param(),
])
def test_garbage_lock_is_taken_over_or_refused(case, sweep):
    check(sweep, case)
