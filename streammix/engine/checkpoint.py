"""Checkpoint directories: resume a killed fit and end with the same model.

A fit is deterministic given its data, parameters and ``random_state``, so a
checkpoint is a replay log of what the fit computed:

* ``pass-NNNNNN.npz`` — the result of each data pass made outside an
  iteration loop (sampling, seeding rounds, initialisation), in order;
* ``loop-NNN.npz`` — the state of the NNN-th iteration loop after its last
  completed iteration (parameters of every model in the batch, histories,
  convergence, RNG states, cursors), overwritten after every iteration.

Re-running the same fit replays: journaled passes return their recorded
results without reading data, and a loop restarts from its snapshot. Every
file is written to a temporary name, fsynced and renamed, so a crash leaves
the previous good file. ``checkpoint.json`` holds the fingerprint of the data
and parameters; a checkpoint made for anything else is refused. A ``lock``
file holding the owner's pid keeps a second process out.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import zipfile

import numpy as np

from .. import _serial
from .._atomic import atomic_write
from ..exceptions import CheckpointError, CheckpointInUseError

FORMAT = "streammix-checkpoint"
FORMAT_VERSION = 1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class Checkpoint:
    """One fit's checkpoint directory (use as a context manager: it holds the lock).

    Parameters
    ----------
    directory : str or path
        Created if missing.
    fingerprint : dict
        JSON-able description of the data and the parameters of the fit.
    restart : bool
        Discard whatever the directory holds and start afresh.
    """

    def __init__(self, directory, fingerprint: dict, *, restart: bool = False):
        self.directory = os.fspath(directory)
        # Through JSON once, so that it compares equal to what is read back.
        self.fingerprint = json.loads(json.dumps(
            {"format": FORMAT, "version": FORMAT_VERSION, **fingerprint}, sort_keys=True))
        self.restart = restart
        self._lock_path = os.path.join(self.directory, "lock")
        self._passes = 0
        self._loops = 0
        self._in_loop = 0
        self.entropy = None

    # -- lifetime -----------------------------------------------------------
    def __enter__(self):
        os.makedirs(self.directory, exist_ok=True)
        self._lock()
        try:
            self._open()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc):
        self._unlock()

    def _lock(self):
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self._lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._lock_owner()
                if owner is not None and owner != os.getpid() and _pid_alive(owner):
                    raise CheckpointInUseError(
                        f"checkpoint directory {self.directory} is in use by process {owner} "
                        f"(lock file {self._lock_path}); wait for that fit to finish") from None
                with contextlib.suppress(FileNotFoundError):  # stale: its owner is gone
                    os.unlink(self._lock_path)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            return
        raise CheckpointInUseError(f"could not take the lock {self._lock_path}")

    def _lock_owner(self):
        try:
            with open(self._lock_path) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _unlock(self):
        if self._lock_owner() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)

    def _open(self):
        meta_path = os.path.join(self.directory, "checkpoint.json")
        for stale in glob.glob(os.path.join(self.directory, ".*.tmp")):
            os.unlink(stale)  # a write that a crash interrupted
        if self.restart:
            for path in glob.glob(os.path.join(self.directory, "*.npz")):
                os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(meta_path)
        if os.path.exists(meta_path):
            try:
                with open(meta_path) as handle:
                    saved = json.load(handle)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{meta_path} is damaged ({exc}); start afresh with "
                                      "restart=True (CLI: --restart)") from None
            self._check_same(saved)
            self.entropy = saved.get("entropy")
        else:
            # A fit without random_state draws its seed once; resuming reuses it.
            self.entropy = int(np.random.SeedSequence().entropy)
            with atomic_write(meta_path, "w") as handle:
                json.dump({**self.fingerprint, "entropy": self.entropy}, handle, indent=1,
                          sort_keys=True)

    def _check_same(self, saved: dict):
        saved = {k: v for k, v in saved.items() if k != "entropy"}
        why = None
        if saved.get("format") != FORMAT or saved.get("version") != FORMAT_VERSION:
            why = (f"it was written in checkpoint format {saved.get('format')} version "
                   f"{saved.get('version')}, this streammix uses version {FORMAT_VERSION}")
        elif saved.get("estimator") != self.fingerprint.get("estimator"):
            why = f"it belongs to a {saved.get('estimator')} fit"
        elif saved.get("data") != self.fingerprint.get("data"):
            difference = _difference(saved["data"], self.fingerprint["data"])
            why = f"it was made for different data ({difference})"
        elif saved.get("start") != self.fingerprint.get("start"):
            why = "it was made for a fit from another starting model (warm_start)"
        elif saved != self.fingerprint:
            names = sorted(k for k in set(saved.get("params", {})) | set(self.fingerprint["params"])
                           if saved.get("params", {}).get(k) != self.fingerprint["params"].get(k))
            why = f"it was made with different parameters ({', '.join(names) or 'state'})"
        if why:
            raise CheckpointError(f"checkpoint {self.directory} cannot be used: {why}. Start "
                                  "afresh with restart=True (CLI: --restart) or use another "
                                  "directory")

    # -- the replay log -------------------------------------------------------
    @property
    def journaling(self) -> bool:
        """Passes are journaled outside iteration loops (loops snapshot instead)."""
        return self._in_loop == 0

    def _path(self, kind, number):
        return os.path.join(self.directory, f"{kind}-{number:06d}.npz")

    def replay_pass(self):
        """``(True, result)`` for the next journaled pass if recorded, else ``(False, None)``."""
        path = self._path("pass", self._passes)
        if not os.path.exists(path):
            return False, None
        self._passes += 1
        return True, _read(path)

    def record_pass(self, result):
        _write(self._path("pass", self._passes), result)
        self._passes += 1

    @contextlib.contextmanager
    def loop(self):
        """An iteration loop: yields ``(saved_state_or_None, save)``; no journaling inside."""
        number = self._loops
        self._loops += 1
        path = self._path("loop", number)
        saved = _read(path) if os.path.exists(path) else None
        self._in_loop += 1
        try:
            yield saved, lambda state: _write(path, state)
        finally:
            self._in_loop -= 1


def _difference(saved: dict, now: dict) -> str:
    """What differs between two data fingerprints, briefly."""
    parts = []
    for key in sorted(set(saved) | set(now)):
        then, current = saved.get(key), now.get(key)
        if then == current:
            continue
        if key == "files":  # [path, size, mtime] per file: name the files
            before = {f[0]: f[1:] for f in then or []}
            after = {f[0]: f[1:] for f in current or []}
            changed = [p for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]
            parts.append("changed, added or removed since: " + ", ".join(changed[:5]))
        else:
            parts.append(f"{key}: {then!r} then, {current!r} now")
    return "; ".join(parts)[:500]


def _write(path, state):
    meta, arrays = _serial.dumps(state)
    with atomic_write(path) as handle:
        np.savez(handle, __state__=np.frombuffer(meta, dtype=np.uint8), **arrays)


def _read(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files if k != "__state__"}
            return _serial.loads(bytes(archive["__state__"]), arrays)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); start afresh with restart=True "
                              "(CLI: --restart)") from None
