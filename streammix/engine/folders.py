"""Where a checkpoint lives: a local (or shared) folder, or a prefix of an object store.

Both give the checkpoint the same few operations: list names, read and write
small JSON documents and states, remove, and keep other processes out.

* :class:`LocalFolder` writes through a temporary file and a rename, and locks
  with ``flock`` on its ``lock`` file (:class:`streammix.io.lease.LocalLock`).
* :class:`ObjectFolder` (``s3://``, ``gs://``, ``az://``, ``memory://``...)
  writes every document in one PUT: object stores have no rename, and a
  single PUT is what makes an object appear whole or not at all. It keeps
  others out with a renewed lease, its ``lock`` object
  (:class:`streammix.io.lease.ObjectLease`, shared with partitioned outputs).
"""

from __future__ import annotations

import contextlib
import os

from ..exceptions import CheckpointError, CheckpointInUseError
from ..io.atomic import atomic_write, remove_stale_temporaries, temporary_target
from ..io.lease import LEASE_SECONDS, MAX_DOCUMENT_BYTES, SETTLE_SECONDS, LocalLock, ObjectLease

__all__ = ["LEASE_SECONDS", "MAX_DOCUMENT_BYTES", "SETTLE_SECONDS", "LocalFolder",
           "ObjectFolder"]


class LocalFolder(LocalLock):
    """A checkpoint in a local or shared folder (created if missing)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.storage_options = None
        super().__init__(os.path.join(directory, "lock"),
                         label=f"checkpoint directory {directory}", user="fit",
                         in_use=CheckpointInUseError)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def names(self) -> set[str]:
        return set(os.listdir(self.directory))

    def read_text(self, name: str) -> str:
        with open(self.path(name), encoding="utf-8") as handle:
            return handle.read(MAX_DOCUMENT_BYTES)

    def write_text(self, name: str, text: str) -> None:
        with atomic_write(self.path(name), "w") as handle:
            handle.write(text)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))

    def acquire(self) -> None:
        """Create the folder and take its lock (an OS lock, ``flock``, on the ``lock`` file);
        then remove the temporaries of writes that a killed fit left."""
        os.makedirs(self.directory, exist_ok=True)
        super().acquire()
        # Under the lock no one else writes here: every temporary of atomic_write is
        # stale (only those: anything else in the folder is not ours to remove).
        for target in {temporary_target(name) for name in self.names()} - {None}:
            remove_stale_temporaries(self.path(target), held=True)


class ObjectFolder(ObjectLease):
    """A checkpoint under a URL prefix of an object store, guarded by a lease."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.directory = url.rstrip("/")
        self.storage_options = storage_options
        super().__init__(self.path("lock"), storage_options,
                         label=f"checkpoint {self.directory}", user="fit",
                         in_use=CheckpointInUseError, error=CheckpointError)

    def path(self, name: str) -> str:
        return f"{self.directory}/{name}"

    def names(self) -> set[str]:
        fs = self._storage.fs
        try:
            fs.invalidate_cache(self.directory)
            if not fs.exists(self.directory):
                return set()
            return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(self.directory, detail=False)}
        except OSError as exc:
            raise self._error(exc, "list it") from None

    def read_text(self, name: str) -> str:
        data = self._storage.fs.cat_file(self.path(name), start=0, end=MAX_DOCUMENT_BYTES)
        return data.decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        self.check_held()
        self._storage.fs.pipe_file(self.path(name), text.encode())  # one PUT

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._storage.fs.rm_file(self.path(name))
