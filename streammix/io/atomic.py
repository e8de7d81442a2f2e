"""Write a file so that readers see the old or the new version, never a torn one.

:func:`atomic_write` writes beside its target, under a name that says whose
temporary it is (``.<target>.<pid>@<host tag>.<random>.tmp``), then renames.
A writer killed in between leaves that temporary behind;
:func:`remove_stale_temporaries` removes those of one target, and only those,
when their writer is known to be gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time

#: Age (seconds) past which a temporary is stale whoever wrote it: a writer on
#: another host sharing the folder cannot be asked whether it lives, and no
#: atomic write of a snapshot or a checkpoint state takes this long.
STALE_SECONDS = 3600.0

# The target's name, the writer's pid and host tag, mkstemp's 8 random characters.
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d{1,10})@(?P<host>[0-9a-f]{8})"
                        r"\.[a-z0-9_]{8}\.tmp")


def _host_tag() -> str:
    """This host, as 8 hex digits (a host name may be long, or hold any character)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _umask() -> int:
    """The process's umask: from /proc on Linux (reading it with os.umask means
    setting it, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a temporary file beside ``path``; on success fsync it and rename it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}@{_host_tag()}.",
                               suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file private (0600); the result gets the usual permissions
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temporary_target(name: str) -> str | None:
    """The target whose :func:`atomic_write` temporary ``name`` is, or None."""
    match = _TEMPORARY.fullmatch(name)
    return None if match is None else match["target"]


def _writer_gone(pid: int, host: str) -> bool:
    """Whether the writer ``pid`` of this host is certainly gone (False when unsure)."""
    if host != _host_tag() or not 0 < pid < 2**31 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive under another user; or not a pid
        return False
    return False


def remove_stale_temporaries(path, *, held: bool = False,
                             max_age: float = STALE_SECONDS) -> list[str]:
    """Remove the temporaries that :func:`atomic_write` of ``path`` left behind.

    Call it where a file written with :func:`atomic_write` is (re)written
    repeatedly, when the writer starts: a writer killed during a write leaves
    its temporary, which no later write would reuse.

    Parameters
    ----------
    path : str or path-like
        The target file. Only files beside it named as :func:`atomic_write`
        names temporaries of this very target are considered; anything else
        (other targets' temporaries included) is left alone.
    held : bool
        The caller holds a lock that every writer of ``path`` takes: no write
        can be under way, so every temporary of ``path`` is stale.
    max_age : float
        Seconds since a temporary was last modified past which it is stale
        even when its writer cannot be asked (a process of another host
        sharing the folder). One of this host whose process is gone is stale
        at once.

    Returns
    -------
    list of str
        The names removed.

    Examples
    --------
    >>> from streammix.io.atomic import remove_stale_temporaries
    >>> remove_stale_temporaries("/tmp/no-such-folder/state.npz")
    []
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    target = os.path.basename(path)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or match["target"] != target:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stale = held or _writer_gone(int(match["pid"]), match["host"]) \
                or now - entry.stat(follow_symlinks=False).st_mtime > max_age
            if stale:
                os.unlink(entry.path)
                removed.append(entry.name)
        except FileNotFoundError:  # removed meanwhile (its writer renamed it, or another sweep)
            continue
    return removed
