"""Where a checkpoint lives: a local (or shared) folder, or a prefix of an object store.

Both give the checkpoint the same few operations: list names, read and write
small JSON documents and states, remove, and keep other processes out.

* :class:`LocalFolder` writes through a temporary file and a rename, and locks
  with ``flock`` (the kernel releases it when its process ends, however).
* :class:`ObjectFolder` (``s3://``, ``gs://``, ``az://``, ``memory://``...)
  writes every document in one PUT: object stores have no rename, and a
  single PUT is what makes an object appear whole or not at all. There is no
  ``flock`` either, so it keeps others out with a **lease**: a ``lock`` object
  naming its holder and an expiry, created with an exclusive PUT
  (``If-None-Match``) where the store has one, read back after
  :data:`SETTLE_SECONDS` (so a store whose "create" is check-then-write cannot
  give it to two fits), renewed by a background thread every quarter of
  :data:`LEASE_SECONDS`. A holder that dies stops renewing:
  its lease can be taken once expired, or at once from the same host when its
  process is gone. A taker writes its own lease, waits :data:`SETTLE_SECONDS`
  and reads it back, so of two takers at once only one goes on; a holder that
  finds its lease taken, or not renewed for three quarters of a lease (it
  stalled, or the store refused the renewals), stops before its next write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from ..exceptions import CheckpointError, CheckpointInUseError
from ..io.atomic import atomic_write
from ..io.storage import Storage

#: Seconds a lease on an object-store checkpoint lasts without renewal.
LEASE_SECONDS = 120.0
#: Seconds a taker of an expired lease waits before checking that it won.
SETTLE_SECONDS = 1.0
#: Largest JSON document (lock, description) read from a checkpoint.
MAX_DOCUMENT_BYTES = 1 << 20


class LocalFolder:
    """A checkpoint in a local or shared folder (created if missing)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.storage_options = None
        self._lock_path = os.path.join(directory, "lock")
        self._lock_fd = None

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

    def check_held(self) -> None:
        """The OS lock cannot be lost while the process lives."""

    def acquire(self) -> None:
        """Create the folder and take its lock: an OS lock (``flock``) on the ``lock`` file.

        The kernel takes it atomically and releases it when its process ends,
        however it ends, so there is no stale lock to judge. The owner's pid
        and host are written into the file only to name them in the error.
        """
        os.makedirs(self.directory, exist_ok=True)
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
        for name in self.names():  # writes that a crash interrupted
            if name.startswith(".") and name.endswith(".tmp"):
                self.remove(name)

    def _lock_owner(self) -> str:
        try:
            with open(self._lock_path) as handle:
                pid, host = handle.read(200).split()[:2]
            return f"process {int(pid)} on {host}"
        except (OSError, ValueError):
            return "another process"

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the OS lock
            self._lock_fd = None


class ObjectFolder:
    """A checkpoint under a URL prefix of an object store, guarded by a lease."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.directory = url.rstrip("/")
        self.storage_options = storage_options
        self._storage = Storage.of(url, storage_options)
        self._me = {"owner": uuid.uuid4().hex, "pid": os.getpid(),
                    "host": socket.gethostname()}
        self._renewer = None
        self._stop = threading.Event()
        self._lost = None  # why the lease was lost, set by the renewing thread
        self._renewed = time.time()

    def path(self, name: str) -> str:
        return f"{self.directory}/{name}"

    def _error(self, exc, what) -> CheckpointError:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
        return CheckpointError(f"checkpoint {self.directory}: cannot {what} ({reason}); check "
                               "the bucket, the path and the credentials")

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

    # -- the lease ------------------------------------------------------------
    def _lease(self) -> str:
        return json.dumps({**self._me, "expires": time.time() + LEASE_SECONDS})

    def _holder(self) -> dict | None:
        """The lease's content, or None when there is none or it is not a lease."""
        try:
            holder = json.loads(self.read_text("lock"))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None  # not a lease anyone can hold: taken over like an expired one
        # every field checked: a lease that never expires, or a pid os.kill cannot take,
        # is not a lease (taken over like an expired one)
        valid = isinstance(holder, dict) and isinstance(holder.get("owner"), str) \
            and isinstance(holder.get("host"), str) and isinstance(holder.get("pid"), int) \
            and not isinstance(holder.get("pid"), bool) and 0 < holder["pid"] < 2**31 \
            and isinstance(holder.get("expires"), int | float) \
            and math.isfinite(holder["expires"]) \
            and holder["expires"] < time.time() + 10 * LEASE_SECONDS
        return holder if valid else None

    def _alive(self, holder) -> bool:
        if holder is None or holder["expires"] < time.time():
            return False
        if holder["host"] == self._me["host"] and holder["pid"] != os.getpid():
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return False  # killed on this host: its lease can go at once
            except PermissionError:
                pass
        return True

    def _in_use(self, holder) -> CheckpointInUseError:
        until = datetime.fromtimestamp(holder["expires"], UTC).strftime("%H:%M:%S UTC")
        return CheckpointInUseError(
            f"checkpoint {self.directory} is in use by process {holder['pid']} on "
            f"{holder['host'][:100]} (its lease runs until {until} and is renewed while it "
            "lives); wait for that fit to finish, or for the lease to expire if it was killed")

    def acquire(self) -> None:
        fs = self._storage.fs
        try:
            try:
                fs.pipe_file(self.path("lock"), self._lease().encode(), mode="create")
            except (FileExistsError, TypeError, NotImplementedError, ValueError):
                # held, or a store without exclusive create: judge the lease in place
                holder = self._holder()
                if self._alive(holder):
                    raise self._in_use(holder) from None
                fs.pipe_file(self.path("lock"), self._lease().encode())
            # Read back after a moment, even after an exclusive create: some stores
            # (and fsspec's fallback) create by checking first, which is not atomic.
            time.sleep(SETTLE_SECONDS)
            holder = self._holder()
            if holder is None or holder["owner"] != self._me["owner"]:
                raise self._in_use(holder or {**self._me, "pid": 0, "host": "?",
                                              "expires": time.time()}) from None
        except CheckpointError:
            raise
        except OSError as exc:
            raise self._error(exc, "take its lease") from None
        self._renewed = time.time()
        self._renewer = threading.Thread(target=self._renew, name="streammix-lease",
                                         daemon=True)
        self._renewer.start()

    def _renew(self):
        while not self._stop.wait(LEASE_SECONDS / 4) and self._renew_once():
            pass

    def _renew_once(self) -> bool:
        """Extend the lease, unless another holder has it now; False once it is lost."""
        try:
            holder = self._holder()
            if holder is not None and holder["owner"] != self._me["owner"]:
                self._lost = f"process {holder['pid']} on {holder['host'][:100]} took it"
                return False
            self._storage.fs.pipe_file(self.path("lock"), self._lease().encode())
            self._renewed = time.time()
        except Exception as exc:  # the store is away for a moment: try again
            if time.time() - self._renewed > LEASE_SECONDS:
                self._lost = f"it could not be renewed ({type(exc).__name__})"
                return False
        return True

    def check_held(self) -> None:
        """Stop before writing once the lease is lost, or may have run out: a writer that
        stalled (or whose renewals fail) for most of a lease writes nothing more."""
        if self._lost is None and time.time() - self._renewed > 0.75 * LEASE_SECONDS:
            self._lost = "it was not renewed for most of its duration"
        if self._lost is not None:
            raise CheckpointInUseError(f"checkpoint {self.directory}: this fit lost its lease "
                                       f"({self._lost}); it stops without writing more")

    def release(self) -> None:
        if self._renewer is None:
            return
        self._stop.set()
        self._renewer.join()
        self._renewer = None
        with contextlib.suppress(OSError):
            holder = self._holder()
            if holder is not None and holder["owner"] == self._me["owner"]:
                self.remove("lock")
