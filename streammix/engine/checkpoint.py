"""Checkpoints: resume a killed fit and end with the same model.

A fit is deterministic given its data, parameters and ``random_state``, so a
checkpoint is a replay log of what the fit computed:

* ``pass-NNNNNN.npz`` — the result of each data pass made outside an
  iteration loop (sampling, seeding rounds, initialisation), in order;
* ``loop-NNNNNN.GGGGGG.npz`` — the state of the NNNNNN-th iteration loop after
  its last completed iteration (parameters of every model in the batch,
  histories, convergence, RNG states, cursors): generation GGGGGG, written
  after every iteration; the previous generation is removed only once the
  next one is written.

Re-running the same fit replays: journaled passes return their recorded
results without reading data, and a loop restarts from its newest state.

A checkpoint is a local or shared folder, or a URL prefix of an object store
(``s3://bucket/ckpt/``): see :mod:`streammix.engine.folders` for how each is
written (rename, or one PUT per state) and locked (``flock``, or a lease).

Nothing read back is trusted before it is checked. Each state carries a
SHA-256 digest of its content, checked (with the state's types and shapes)
before it is used: a state that was changed, or that another fit wrote, is
refused. A state that cannot even be opened — cut short (a store that does
not write atomically, a disk that lost its tail) — is passed over with a
warning: the previous generation of a loop is used instead, and a pass is
computed again, which gives the same model since the fit is deterministic.
``checkpoint.json`` holds the fingerprint of the data and parameters; a
checkpoint made for anything else is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
import zipfile

import numpy as np

from .. import _serial
from ..exceptions import CheckpointError
from ..io.npz import NpzError, NpzReader, json_bytes, write_npz
from ..io.storage import is_url
from .folders import LocalFolder, ObjectFolder

FORMAT = "streammix-checkpoint"
FORMAT_VERSION = 2
_STATE = re.compile(r"(pass|loop)-(\d{6})(?:\.(\d{6}))?\.npz")


class PartialStateWarning(UserWarning):
    """A checkpoint state could not be opened (cut short) and was passed over."""


class _PartialState(CheckpointError):
    """A state cut short: not a zip that can be opened."""


class Checkpoint:
    """One fit's checkpoint (use as a context manager: it holds the lock or lease).

    Parameters
    ----------
    directory : str or path
        A folder (created if missing), or a URL prefix of an object store.
    fingerprint : dict
        JSON-able description of the data and the parameters of the fit.
    restart : bool
        Discard whatever the checkpoint holds and start afresh.
    storage_options : dict, optional
        For a URL: passed to the fsspec filesystem (never written anywhere).
    """

    def __init__(self, directory, fingerprint: dict, *, restart: bool = False,
                 storage_options: dict | None = None):
        self.directory = os.fspath(directory)
        self.folder = ObjectFolder(self.directory, storage_options) if is_url(self.directory) \
            else LocalFolder(self.directory)
        # Through JSON once, so that it compares equal to what is read back.
        self.fingerprint = json.loads(json.dumps(
            {"format": FORMAT, "version": FORMAT_VERSION, **fingerprint}, sort_keys=True))
        self.restart = restart
        self._names: set[str] = set()
        self._passes = 0
        self._loops = 0
        self._in_loop = 0
        self.entropy = None

    # -- lifetime -----------------------------------------------------------
    def __enter__(self):
        self.folder.acquire()
        try:
            self._open()
        except BaseException:
            self.folder.release()
            raise
        return self

    def __exit__(self, *exc):
        self.folder.release()

    def _open(self):
        self._names = self.folder.names()
        if self.restart:
            for name in sorted(self._names):
                if _STATE.fullmatch(name) or name == "checkpoint.json":
                    self.folder.remove(name)
            self._names = self.folder.names()
        if "checkpoint.json" in self._names:
            meta_path = self.folder.path("checkpoint.json")
            try:
                saved = json.loads(self.folder.read_text("checkpoint.json"))
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
            self.folder.write_text("checkpoint.json", json.dumps(
                {**self.fingerprint, "entropy": self.entropy}, indent=1, sort_keys=True))

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

    def _write(self, name, state):
        self.folder.check_held()
        _write(self.folder.path(name), state, self.folder.storage_options)
        self._names.add(name)

    def _read(self, name):
        return _read(self.folder.path(name), self.folder.storage_options)

    def replay_pass(self):
        """``(True, result)`` for the next journaled pass if recorded, else ``(False, None)``."""
        name = f"pass-{self._passes:06d}.npz"
        if name not in self._names:
            return False, None
        try:
            result = self._read(name)
        except _PartialState as exc:
            warnings.warn(f"{exc}: computing that pass again", PartialStateWarning,
                          stacklevel=2)
            return False, None
        self._passes += 1
        return True, result

    def record_pass(self, result):
        self._write(f"pass-{self._passes:06d}.npz", result)
        self._passes += 1

    @contextlib.contextmanager
    def loop(self, template=None):
        """An iteration loop: yields ``(saved_state_or_None, save)``; no journaling inside.

        A saved state must conform to ``template`` (the loop's fresh state: same
        types, shapes and lengths; see :func:`streammix._serial.conforms`).
        """
        number = self._loops
        self._loops += 1
        generations = sorted((int(m.group(3)) for m in map(_STATE.fullmatch, self._names)
                              if m and m.group(1) == "loop" and m.group(3) is not None
                              and int(m.group(2)) == number), reverse=True)
        saved, current = None, 0
        for generation in generations:  # the newest state that can be opened
            name = f"loop-{number:06d}.{generation:06d}.npz"
            try:
                saved, current = self._read(name), generation
                break
            except _PartialState as exc:
                warnings.warn(f"{exc}: resuming from the state before it",
                              PartialStateWarning, stacklevel=3)
        why = None if saved is None or template is None else _serial.conforms(saved, template)
        if why is not None:
            raise CheckpointError(f"{self.folder.path(f'loop-{number:06d}.{current:06d}.npz')} "
                                  f"does not hold a state of this fit ({why}); start afresh "
                                  "with restart=True (CLI: --restart)")
        others = [g for g in generations if g != current]

        def save(state):
            nonlocal current, others
            current += 1
            self._write(f"loop-{number:06d}.{current:06d}.npz", state)
            for old in [current - 1, *others]:  # the new state is whole: the rest can go
                if old != current:
                    self.folder.remove(f"loop-{number:06d}.{old:06d}.npz")
            others = []

        self._in_loop += 1
        try:
            yield saved, save
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


def _write(path, state, storage_options=None):
    meta, arrays = _serial.dumps(state)
    write_npz(path, {**arrays, "__state__": np.frombuffer(meta, dtype=np.uint8),
                     "__digest__": _digest(meta, arrays)}, storage_options)


def _read(path, storage_options=None):
    """The state saved in ``path``, once its digest and its every entry check out.

    A state that is not even a zip that opens (cut short) is a
    :class:`_PartialState`; any other fault is a :class:`CheckpointError`.
    """
    try:
        npz = NpzReader(path, storage_options)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _PartialState(f"{path} is cut short ({exc})") from None
    except (OSError, NpzError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); start afresh with restart=True "
                              "(CLI: --restart)") from None
    try:
        with npz:
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
