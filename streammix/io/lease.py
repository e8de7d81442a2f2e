"""One writer at a time for a folder or a prefix: an OS lock locally, a lease on object stores.

Checkpoints (:mod:`streammix.engine.folders`) and partitioned outputs
(:mod:`streammix.io.output`) keep other processes out the same way:

* :class:`LocalLock` locks a file with ``flock`` (the kernel releases it when
  its process ends, however), so there is no stale lock to judge. The
  owner's pid and host are written into the file only to name them in the
  error. The file stays: removing a lock file that another process may be
  opening would let two processes lock two different files.
* :class:`ObjectLease` (``s3://``, ``gs://``, ``az://``, ``memory://``...)
  has no ``flock``, so it keeps others out with a **lease**: an object naming
  its holder and an expiry, created with an exclusive PUT (``If-None-Match``)
  where the store has one, read back after :data:`SETTLE_SECONDS` (so a store
  whose "create" is check-then-write cannot give it to two writers), renewed
  by a background thread every quarter of :data:`LEASE_SECONDS`. A holder
  that dies stops renewing: its lease can be taken once expired, or at once
  from the same host when its process is gone. A taker writes its own lease,
  waits :data:`SETTLE_SECONDS` and reads it back, so of two takers at once
  only one goes on; a holder that finds its lease taken, or not renewed for
  three quarters of a lease (it stalled, or the store refused the renewals),
  stops before its next write (:meth:`ObjectLease.check_held`).

Both are told what they guard (``label``, ``user``) and which errors to
raise, so that each caller's messages name its own thing.
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

from ..exceptions import StreammixError
from .storage import Storage

#: Seconds a lease on an object store lasts without renewal.
LEASE_SECONDS = 120.0
#: Seconds a taker of a lease waits before checking that it won.
SETTLE_SECONDS = 1.0
#: Largest JSON document (lease) read back.
MAX_DOCUMENT_BYTES = 1 << 20


class LocalLock:
    """An exclusive ``flock`` on ``lock_path`` (its folder must exist).

    Parameters
    ----------
    lock_path : str
        The lock file (created if missing, never removed).
    label : str
        What it guards, to start messages (``"checkpoint directory /x"``).
    user : str
        Who holds it (``"fit"``, ``"job"``), for messages.
    in_use : type of Exception
        Raised when another process holds the lock.
    """

    def __init__(self, lock_path: str, *, label: str, user: str,
                 in_use: type[Exception] = StreammixError):
        self._lock_path = lock_path
        self._label, self._user, self._in_use_error = label, user, in_use
        self._lock_fd = None

    def acquire(self) -> None:
        """Take the lock, or raise ``in_use`` naming its holder."""
        # O_NOFOLLOW: a lock "file" that is a symlink would make us truncate its target
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._in_use_error(
                f"{self._label} is in use by {self._lock_owner()} (lock file "
                f"{self._lock_path}); wait for that {self._user} to finish") from None
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

    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    def check_held(self) -> None:
        """The OS lock cannot be lost while the process lives."""

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the OS lock
            self._lock_fd = None


class ObjectLease:
    """A lease object at ``url`` (see the module), renewed while held.

    Parameters
    ----------
    url : str
        The lease object, e.g. ``s3://bucket/ckpt/lock``.
    storage_options : dict, optional
        Passed to the fsspec filesystem.
    label, user, in_use
        As for :class:`LocalLock`.
    error : type of Exception
        Raised when the store cannot be reached or written.
    """

    def __init__(self, url: str, storage_options: dict | None = None, *, label: str,
                 user: str, in_use: type[Exception] = StreammixError,
                 error: type[Exception] = StreammixError):
        self._lease_url = url
        self._storage = Storage.of(url, storage_options)
        self._label, self._user = label, user
        self._in_use_error, self._store_error = in_use, error
        self._me = {"owner": uuid.uuid4().hex, "pid": os.getpid(),
                    "host": socket.gethostname()}
        self._renewer = None
        self._stop = threading.Event()
        self._lost = None  # why the lease was lost, set by the renewing thread
        self._renewed = time.time()

    def _error(self, exc, what) -> Exception:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
        return self._store_error(f"{self._label}: cannot {what} ({reason}); check the bucket, "
                                 "the path and the credentials")

    def _lease(self) -> bytes:
        return json.dumps({**self._me, "expires": time.time() + LEASE_SECONDS}).encode()

    def _holder(self) -> dict | None:
        """The lease's content, or None when there is none or it is not a lease."""
        try:
            data = self._storage.fs.cat_file(self._lease_url, start=0, end=MAX_DOCUMENT_BYTES)
            holder = json.loads(data.decode("utf-8"))
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

    def _in_use(self, holder) -> Exception:
        until = datetime.fromtimestamp(holder["expires"], UTC).strftime("%H:%M:%S UTC")
        return self._in_use_error(
            f"{self._label} is in use by process {holder['pid']} on "
            f"{holder['host'][:100]} (its lease runs until {until} and is renewed while it "
            f"lives); wait for that {self._user} to finish, or for the lease to expire if it "
            "was killed")

    @property
    def held(self) -> bool:
        return self._renewer is not None

    def acquire(self) -> None:
        """Take the lease (see the module), or raise ``in_use`` naming its holder."""
        fs = self._storage.fs
        try:
            try:
                fs.pipe_file(self._lease_url, self._lease(), mode="create")
            except (FileExistsError, TypeError, NotImplementedError, ValueError):
                # held, or a store without exclusive create: judge the lease in place
                holder = self._holder()
                if self._alive(holder):
                    raise self._in_use(holder) from None
                fs.pipe_file(self._lease_url, self._lease())
            # Read back after a moment, even after an exclusive create: some stores
            # (and fsspec's fallback) create by checking first, which is not atomic.
            time.sleep(SETTLE_SECONDS)
            holder = self._holder()
            if holder is None or holder["owner"] != self._me["owner"]:
                raise self._in_use(holder or {**self._me, "pid": 0, "host": "?",
                                              "expires": time.time()}) from None
        except self._in_use_error:
            raise
        except OSError as exc:
            raise self._error(exc, "take its lease") from None
        self._renewed = time.time()
        self._lost = None
        self._stop.clear()
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
            self._storage.fs.pipe_file(self._lease_url, self._lease())
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
            raise self._in_use_error(f"{self._label}: this {self._user} lost its lease "
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
                self._storage.fs.rm_file(self._lease_url)
