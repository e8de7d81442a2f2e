"""Partitioned Parquet outputs, written part by part where the rows are, then committed.

An output folder or prefix (``out/``, ``s3://bucket/out/``) receives one
``part-NNNNNN.parquet`` per chunk of the input. Parts are first written, each
in one request, under ``_temporary/<job>/`` inside the output — a name every
Parquet reader skips (``_``-prefixed), streammix's own included — by whoever
computed them (the Dask workers, on a cluster). Only when every part exists
does :meth:`PartitionedOutput.commit` move them to their final names and write
``_SUCCESS``, a JSON manifest listing them, as Hadoop's S3A committers do:

* a job that fails before the commit changes nothing visible (a previous
  output of the same folder stays whole, its ``_SUCCESS`` included);
* the commit itself is a few server-side moves (no data passes through the
  client); ``_SUCCESS`` is removed first and written last, so a reader that
  needs certainty waits for it.

An output folder that holds anything else than a previous output is refused,
so a mistyped ``-o`` cannot delete data.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import DataError
from .parquet import WRITE_OPTIONS
from .storage import Storage, _reason, in_parallel, is_url, with_retries

#: Written last by a commit: the names of the parts and what they hold.
MANIFEST = "_SUCCESS"
STAGING = "_temporary"
MANIFEST_FORMAT = "streammix-output"

_PART = re.compile(r"part-\d{6}\.parquet")


def is_dataset_output(path) -> bool:
    """Whether ``path`` names a partitioned output: a URL, a path ending in a separator,
    or an existing folder (else it names one Parquet file)."""
    path = os.fspath(path)
    return is_url(path) or path.endswith(("/", os.sep)) or os.path.isdir(path)


class PartitionedOutput:
    """One job's partitioned output (picklable: workers write parts through it).

    Parameters
    ----------
    path : str
        A local folder or a URL prefix.
    storage_options : dict, optional
        For URLs: passed to the fsspec filesystem (credentials stay out of the repr).
    """

    def __init__(self, path, storage_options=None):
        path = os.fspath(path)
        self.path = path.rstrip("/") or "/"
        self.storage = Storage.of(path, storage_options) if is_url(path) else Storage("file")
        self.job = uuid.uuid4().hex[:12]

    def __repr__(self):
        return f"PartitionedOutput({self.path!r})"

    def _join(self, *names) -> str:
        return "/".join([self.path, *names])

    @property
    def staging(self) -> str:
        return self._join(STAGING, self.job)

    def part_name(self, index: int) -> str:
        return f"part-{index:06d}.parquet"

    def prepare(self) -> None:
        """Check the output before any work: a folder (made if missing) that holds
        nothing but a previous output, on a store that exists and can be listed."""
        fs = self.storage.fs
        try:
            if is_url(self.path) and not fs.exists(self.path.split("://", 1)[1].split("/")[0]):
                raise DataError("its bucket or container does not exist, or is not "
                                "accessible with these credentials", file=self.path)
            fs.invalidate_cache(self.path)
            names = sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(self.path, detail=False)
                           ) if fs.exists(self.path) else []
            if is_url(self.path) and fs.isfile(self.path):
                raise DataError("is an object, not a prefix; give a folder-like URL ending "
                                "in /", file=self.path)
            foreign = [n for n in names if n not in (MANIFEST, STAGING) and not _PART.fullmatch(n)]
            if foreign:
                raise DataError(f"holds other things than a streammix output "
                                f"({', '.join(foreign[:3])}); give an empty or new folder",
                                file=self.path)
            if not is_url(self.path):
                os.makedirs(self.staging, exist_ok=True)
        except DataError:
            raise
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot be written ({_reason(exc)})", file=self.path) from None

    def write_part(self, index: int, table: pa.Table) -> dict:
        """Write one part under the staging name, in one request; its row count."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, **WRITE_OPTIONS)
        data = buffer.getvalue()
        target = self._join(STAGING, self.job, self.part_name(index))
        try:
            with_retries(lambda: self.storage.fs.pipe_file(target, data))
        except OSError as exc:
            raise DataError(f"part {index} cannot be written ({_reason(exc)})",
                            file=self.path) from None
        return {"index": index, "rows": table.num_rows}

    def commit(self, parts: list[dict], summary: dict) -> None:
        """Make the staged ``parts`` the output: previous parts go, ``_SUCCESS`` comes last."""
        fs = self.storage.fs
        fs.invalidate_cache(self.path)  # the workers wrote through their own instances
        names = [self.part_name(part["index"]) for part in parts]
        staged = {os.path.basename(p.rstrip("/")) for p in fs.ls(self.staging, detail=False)} \
            if fs.exists(self.staging) else set()
        missing = [name for name in names if name not in staged]
        if missing:  # nothing visible has changed yet
            raise DataError(f"{len(missing)} staged part(s) are missing ({missing[0]}...): "
                            "not committed; the previous output is unchanged", file=self.path)
        manifest = self._join(MANIFEST)
        previous = {os.path.basename(p.rstrip("/")) for p in fs.ls(self.path, detail=False)}
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(manifest)
        in_parallel(lambda name: fs.mv(self._join(STAGING, self.job, name), self._join(name)),
                    names)
        stale = sorted(n for n in previous - set(names) if _PART.fullmatch(n))
        in_parallel(lambda name: fs.rm_file(self._join(name)), stale)
        body = json.dumps({"format": MANIFEST_FORMAT, "version": 1, "job": self.job,
                           "parts": [{"name": name, "rows": part["rows"]}
                                     for name, part in zip(names, parts, strict=True)],
                           **summary}, indent=1).encode()
        fs.pipe_file(manifest, body)
        self.abort()  # the empty staging folder

    def abort(self) -> None:
        """Remove this job's staged parts (best effort: a failure is already being raised)."""
        fs = self.storage.fs
        with contextlib.suppress(OSError):
            if fs.exists(self.staging):
                fs.rm(self.staging, recursive=True)
        with contextlib.suppress(OSError):
            if not is_url(self.path):
                os.rmdir(self._join(STAGING))  # only when no other job uses it
