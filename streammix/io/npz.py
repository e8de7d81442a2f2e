"""Zips of ``.npy`` entries (NumPy's ``.npz``), read as untrusted input.

Model files and checkpoint states are written by :func:`write_npz` with every
entry *stored* (not compressed), as ``np.savez`` does. :class:`NpzReader`
reads them back without trusting anything in the file:

* only entries the caller asks for are read;
* an entry must be stored, so its size cannot exceed the bytes of the file
  (no zip bomb: nothing inflates);
* an entry's ``.npy`` header is parsed first (a literal, never pickle or
  code), its dtype must be plain numbers, and its declared shape is checked
  (against the caller's expected shape, when given) *before* its data is read;
* the data is read in exactly the declared size, then the zip's CRC is
  checked, so a flipped byte is an error.

Errors are :class:`NpzError` (a ``ValueError``) naming the entry; callers add
the file and what to do.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np

from ..exceptions import NpzError
from .atomic import atomic_write
from .storage import Storage, _reason, is_url

#: Largest ``.npy`` header read (NumPy's own default limit).
_MAX_HEADER = 10_000


def write_npz(path, arrays: dict, storage_options=None) -> None:
    """Write ``arrays`` (name -> ndarray of numbers) as an ``.npz``, atomically.

    A URL (``s3://bucket/model.npz``) is written in one request: object stores
    have no rename, and one PUT is what makes the object appear whole or not.
    """
    if is_url(path):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            Storage.of(path, storage_options).fs.pipe_file(path, buffer.getvalue())
        except OSError as exc:  # the store's message names no object: add it
            message = f"{path}: cannot be written ({_reason(exc)})"
            raise (type(exc)(exc.errno, message) if exc.errno is not None
                   else type(exc)(message)) from None
        return
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, expected_shape):
    name = info.filename[: -len(".npy")]
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
        raise NpzError(f"entry {name!r} is compressed; streammix writes stored entries only")
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle, max_header_size=_MAX_HEADER)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise NpzError(f"entry {name!r} has no valid .npy header ({exc})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
            raise NpzError(f"entry {name!r} has dtype {dtype}; only plain numbers are allowed")
        if expected_shape is not None and tuple(shape) != tuple(expected_shape):
            raise NpzError(f"entry {name!r} has shape {tuple(shape)}, expected "
                           f"{tuple(expected_shape)}")
        n_bytes = math.prod(shape) * dtype.itemsize
        if n_bytes != info.file_size - handle.tell():
            raise NpzError(f"entry {name!r} declares {n_bytes} bytes of data but holds "
                           f"{info.file_size - handle.tell()}")
        data = handle.read(n_bytes)
        handle.read(1)  # reaching the end makes zipfile check the CRC
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C").copy()


class NpzReader:
    """An ``.npz`` file opened for reading entries one by one (a context manager).

    ``names`` lists its entries (without ``.npy``); :meth:`read` reads one,
    checking its shape first when one is expected.

    Raises
    ------
    OSError, zipfile.BadZipFile
        The file cannot be opened as a zip.
    NpzError
        An entry is not a ``.npy`` array, or appears twice.
    """

    def __init__(self, path, storage_options=None):
        if is_url(path):  # read through the store, entry by entry (seekable)
            path = Storage.of(path, storage_options).open(path)
        self._archive = zipfile.ZipFile(path)
        self._entries = {}
        for info in self._archive.infolist():
            name = info.filename[: -len(".npy")]
            if not info.filename.endswith(".npy") or name in self._entries:
                self._archive.close()
                raise NpzError(f"unexpected entry {info.filename!r}")
            self._entries[name] = info
        self.names = list(self._entries)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._archive.close()

    def read(self, name, shape=None) -> np.ndarray:
        """Entry ``name``; with ``shape``, an error unless the header declares exactly it."""
        info = self._entries.get(name)
        if info is None:
            raise NpzError(f"entry {name!r} is missing")
        try:
            return _read_entry(self._archive, info, shape)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise NpzError(f"entry {name!r} is damaged ({exc})") from None


def json_bytes(array: np.ndarray) -> bytes:
    """The UTF-8 JSON text held in a 1-D uint8 entry."""
    if array.dtype != np.uint8 or array.ndim != 1:
        raise NpzError("the metadata entry is not UTF-8 bytes")
    return array.tobytes()
