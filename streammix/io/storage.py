"""Where data lives: local paths, or URLs of object stores and the web, through fsspec.

A URL (``s3://``, ``gs://``, ``az://``/``abfs://``, ``http(s)://``,
``memory://``, ``file://``) is read with the fsspec filesystem of its
protocol, configured by ``storage_options`` (endpoint, profile, anonymous
access...). Credentials come from that backend's usual chain (environment,
profile files, instance roles) unless given there; they are never part of a
message, a fingerprint or a model file: :class:`Storage` keeps the options
out of its ``repr`` and out of everything it reports.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from ..exceptions import DataError
from .manifest import output_parts

#: Endings of the Parquet files a directory (or prefix) contributes.
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")

#: Attempts of a read from object storage before it fails (transient errors:
#: connection resets, 503 SlowDown), with exponential backoff from
#: ``RETRY_DELAY`` seconds. The backends retry some errors themselves; this
#: covers the rest, at the level of a whole chunk.
READ_ATTEMPTS = 4
RETRY_DELAY = 0.5

#: Footers read at once when planning many objects (round trips overlap).
PLANNING_THREADS = 16


def is_url(path) -> bool:
    """Whether ``path`` is a URL with a protocol (as opposed to a local path)."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


class Storage:
    """An fsspec filesystem by protocol and options, opened lazily (picklable, for workers).

    Parameters
    ----------
    protocol : str
        ``"s3"``, ``"gs"``, ``"az"``, ``"http"``, ``"memory"``, ...
    storage_options : dict, optional
        Passed to the filesystem (fsspec caches instances with equal options).
    """

    def __init__(self, protocol: str, storage_options: dict | None = None):
        self.protocol = protocol
        self.storage_options = dict(storage_options or {})

    @classmethod
    def of(cls, url: str, storage_options: dict | None = None) -> Storage:
        """The store of ``url``, by its protocol."""
        return cls(url.split("://", 1)[0], storage_options)

    def __repr__(self):  # never the options: they may hold credentials
        return f"Storage({self.protocol!r})"

    @property
    def fs(self):
        import fsspec

        try:
            return fsspec.filesystem(self.protocol, **self.storage_options)
        except ImportError as exc:
            raise DataError(f"reading {self.protocol}:// needs a package that is not "
                            f"installed ({exc}); install streammix with its object-storage "
                            "extras, e.g. pip install 'streammix[s3]'") from None

    def expand(self, path: str, *, uncommitted: str = "refuse") -> list[tuple[str, int | None]]:
        """A file, a directory/prefix (its Parquet files, recursively) or a glob, sorted,
        as URLs, each with the row count a streammix output's manifest gives it (or None).

        In a prefix, a streammix output folder gives exactly the parts its
        ``_SUCCESS`` lists (see :func:`streammix.io.manifest.output_parts` for
        ``uncommitted``); hidden and ``_``-prefixed names, folders included (a
        job's ``_temporary/`` staging), hold no data, as for every Parquet reader.
        """
        fs = self.fs
        try:
            self._forget_listings(fs, path)
            if any(ch in path for ch in "*?["):
                found = sorted(fs.glob(path))
                if not found:
                    raise DataError("no object matches this pattern", file=path)
                return [(self.url(p), None) for p in found]
            if fs.isdir(path):
                found = self._folder_files(fs, path, uncommitted)
                if not found:
                    raise DataError("holds no .parquet objects", file=path)
                return [(self.url(p), rows) for p, rows in found]
            if not fs.exists(path):
                raise DataError("no such object, or no access to it (check the bucket, "
                                "the path and the credentials)", file=path)
        except DataError:
            raise
        except PermissionError as exc:
            raise DataError(f"access denied with these credentials ({_reason(exc)})",
                            file=path) from None
        except Exception as exc:  # the backend's errors: no bucket, network
            raise DataError(f"cannot be listed ({_reason(exc)})", file=path) from None
        return [(path, None)]

    @staticmethod
    def _forget_listings(fs, path: str) -> None:
        """Drop the listings the (process-wide) filesystem cached for ``path``, its parents
        and every folder below it. Another process may have rewritten them since (a new
        commit of an output): a stale listing gives an old ETag, and ``find`` does not
        replace listings it finds cached."""
        root = fs._strip_protocol(re.split(r"[*?\[]", path, maxsplit=1)[0]).rstrip("/")
        fs.invalidate_cache(root)
        for key in [k for k in list(fs.dircache) if k.startswith(root + "/")]:
            fs.dircache.pop(key, None)

    def _folder_files(self, fs, path: str, uncommitted: str) -> list[tuple[str, int | None]]:
        """The Parquet objects under prefix ``path`` a reader takes, from one listing."""
        base = fs._strip_protocol(path).rstrip("/")
        folders: dict[str, tuple[list, set]] = {}  # folder -> (its files, its subfolders)
        for found in fs.find(path):
            parts = (found[len(base) + 1:] if found.startswith(base + "/")
                     else os.path.basename(found)).split("/")
            for depth in range(len(parts)):
                entry = folders.setdefault("/".join(parts[:depth]), ([], set()))
                if depth == len(parts) - 1:
                    entry[0].append(parts[depth])
                else:
                    entry[1].add(parts[depth])
        selected = []
        for folder, (files, subfolders) in folders.items():
            if any(name.startswith((".", "_")) for name in folder.split("/") if name):
                continue  # under a hidden or _-prefixed folder
            full = self.url(f"{base}/{folder}" if folder else base)  # URLs in messages too
            listed = output_parts(fs, full, files, subfolders, uncommitted=uncommitted)
            selected += [(f"{full}/{name}", rows) for name, rows in listed] \
                if listed is not None else \
                [(f"{full}/{name}", None) for name in files
                 if name.endswith(PARQUET_SUFFIXES) and not name.startswith((".", "_"))]
        return sorted(selected)

    def url(self, path: str) -> str:
        """``path`` as the backend returns it (no protocol) turned back into a URL."""
        return path if "://" in path else f"{self.protocol}://{path}"

    def version(self, path: str) -> tuple[int, str]:
        """(size, a tag that changes when the object does: ETag, or modification time)."""
        info = self.fs.info(path)
        tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or \
            info.get("mtime") or info.get("last_modified") or ""
        return int(info.get("size") or 0), str(tag).strip('"')

    def open(self, path: str):
        """A seekable binary file of the object (for pyarrow)."""
        return self.fs.open(path, "rb")


def in_parallel(fn, items, threads=None) -> list:
    """``[fn(item) for item in items]`` with the round trips overlapping, in order."""
    items = list(items)
    threads = PLANNING_THREADS if threads is None else threads
    if len(items) < 2 or threads < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def with_retries(read, transient=(OSError, ConnectionError, TimeoutError)):
    """``read()``, retried with exponential backoff on transient errors (the last one
    is raised; a missing object is not transient)."""
    for attempt in range(READ_ATTEMPTS - 1):
        try:
            return read()
        except FileNotFoundError:
            raise
        except transient:
            time.sleep(RETRY_DELAY * 2**attempt)
    return read()


def _reason(exc) -> str:
    """An exception as one short line (the backends' messages can be long)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
