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
the previous good file. Each state file carries a SHA-256 digest of its
content, checked (with the state's types and shapes) before it is used.
``checkpoint.json`` holds the fingerprint of the data and parameters; a
checkpoint made for anything else is refused. An OS lock on the ``lock``
file keeps a second process out.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import socket
import zipfile

import numpy as np

from .. import _serial
from .._atomic import atomic_write
from .._npz import NpzError, NpzReader, json_bytes, write_npz
from ..exceptions import CheckpointError, CheckpointInUseError
from ..io.storage import is_url

FORMAT = "streammix-checkpoint"
FORMAT_VERSION = 1


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
        if is_url(self.directory):
            raise CheckpointError(f"checkpoint {self.directory}: checkpoints on object storage "
                                  "are not supported yet; give a local or shared folder")
        # Through JSON once, so that it compares equal to what is read back.
        self.fingerprint = json.loads(json.dumps(
            {"format": FORMAT, "version": FORMAT_VERSION, **fingerprint}, sort_keys=True))
        self.restart = restart
        self._lock_path = os.path.join(self.directory, "lock")
        self._lock_fd = None
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
        """Take the directory's lock: an OS lock (``flock``) on the ``lock`` file.

        The kernel takes it atomically and releases it when its process ends,
        however it ends, so there is no stale lock to judge and no window
        between creating the file and writing its owner. The owner's pid and
        host are written into the file only to name them in the error.
        """
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointInUseError(
                f"checkpoint directory {self.directory} is in use by {self._lock_owner()} "
                f"(lock file {self._lock_path}); wait for that fit to finish") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def _lock_owner(self) -> str:
        try:
            with open(self._lock_path) as handle:
                pid, host = handle.read(200).split()[:2]
            return f"process {int(pid)} on {host}"
        except (OSError, ValueError):
            return "another process"

    def _unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the OS lock
            self._lock_fd = None

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
                entropy = saved.get("entropy") if isinstance(saved, dict) else None
                if not isinstance(entropy, int) or isinstance(entropy, bool) or entropy < 0 \
                        or not all(isinstance(saved.get(k), dict) for k in ("data", "params")):
                    raise ValueError("not a checkpoint description with a seed")
            except (OSError, ValueError, RecursionError) as exc:
                raise CheckpointError(f"{meta_path} is damaged ({exc}); start afresh with "
                                      "restart=True (CLI: --restart)") from None
            self._check_same(saved)
            self.entropy = entropy
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
    def loop(self, template=None):
        """An iteration loop: yields ``(saved_state_or_None, save)``; no journaling inside.

        A saved state must conform to ``template`` (the loop's fresh state: same
        types, shapes and lengths; see :func:`streammix._serial.conforms`).
        """
        number = self._loops
        self._loops += 1
        path = self._path("loop", number)
        saved = _read(path) if os.path.exists(path) else None
        why = None if saved is None or template is None else _serial.conforms(saved, template)
        if why is not None:
            raise CheckpointError(f"{path} does not hold a state of this fit ({why}); start "
                                  "afresh with restart=True (CLI: --restart)")
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


def _digest(meta: bytes, arrays: dict) -> np.ndarray:
    """SHA-256 of a state: its JSON skeleton and every array's name, dtype, shape and bytes."""
    digest = hashlib.sha256(meta)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}".encode())
        digest.update(array.data)
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _write(path, state):
    meta, arrays = _serial.dumps(state)
    write_npz(path, {**arrays, "__state__": np.frombuffer(meta, dtype=np.uint8),
                     "__digest__": _digest(meta, arrays)})


def _read(path):
    """The state saved in ``path``, once its digest and its every entry check out."""
    try:
        with NpzReader(path) as npz:
            if any(not re.fullmatch(r"a\d+|__state__|__digest__", name) for name in npz.names):
                raise NpzError("unexpected entries")
            arrays = {name: npz.read(name) for name in npz.names
                      if name not in ("__state__", "__digest__")}
            meta = json_bytes(npz.read("__state__"))
            if not np.array_equal(npz.read("__digest__", (32,)), _digest(meta, arrays)):
                raise NpzError("its digest does not match its content: changed since written")
        return _serial.loads(meta, arrays)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError,
            zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); start afresh with restart=True "
                              "(CLI: --restart)") from None
