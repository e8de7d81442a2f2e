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

One job at a time writes an output: :meth:`PartitionedOutput.prepare` takes
the output's lease (``_lock``; the same :mod:`streammix.io.lease` as
checkpoints: ``flock`` locally, a renewed lease object on object stores) and
holds it until the commit or the abort, so a second job on the same folder is
refused with :class:`~streammix.exceptions.OutputInUseError` before it writes
anything; a job that lost its lease (it stalled past its expiry) stops before
it commits. Under the lease, staged parts of other jobs are stale (they were
staged before this job took the lease, by jobs that no longer hold it and so
can never commit them: killed ones): the job removes them.

Readers take exactly the parts ``_SUCCESS`` lists (see :mod:`streammix.io.manifest`).

An output folder that holds anything else than a previous output is refused,
so a mistyped ``-o`` cannot delete data.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import DataError, OutputInUseError
from .lease import LocalLock, ObjectLease
from .manifest import LOCK, MANIFEST, MANIFEST_FORMAT, MANIFEST_VERSION, STAGING
from .manifest import PART as _PART
from .parquet import WRITE_OPTIONS
from .storage import Storage, _reason, in_parallel, is_url, with_retries

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "STAGING", "PartitionedOutput", "is_dataset_output"]


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
        self.storage_options = storage_options
        self.job = uuid.uuid4().hex[:12]
        self._lease = None  # held from prepare() to commit() or abort(), in this process

    def __repr__(self):
        return f"PartitionedOutput({self.path!r})"

    def __getstate__(self):
        # Workers write parts only: the lease (a lock, a renewing thread) stays here.
        return {**self.__dict__, "_lease": None}

    def _join(self, *names) -> str:
        return "/".join([self.path, *names])

    @property
    def staging(self) -> str:
        return self._join(STAGING, self.job)

    def part_name(self, index: int) -> str:
        return f"part-{index:06d}.parquet"

    def prepare(self) -> None:
        """Check the output before any work: a folder (made if missing) that holds
        nothing but a previous output, on a store that exists and can be listed; then
        take its lease (an :class:`~streammix.exceptions.OutputInUseError` if another
        job holds it) and remove what killed jobs staged."""
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
            foreign = [n for n in names
                       if n not in (MANIFEST, STAGING, LOCK) and not _PART.fullmatch(n)]
            if foreign:
                raise DataError(f"holds other things than a streammix output "
                                f"({', '.join(foreign[:3])}); give an empty or new folder",
                                file=self.path)
            label = f"output {self.path}"
            if is_url(self.path):
                lease = ObjectLease(self._join(LOCK), self.storage_options, label=label,
                                    user="job", in_use=OutputInUseError, error=DataError)
            else:
                os.makedirs(self.path, exist_ok=True)
                lease = LocalLock(os.path.join(self.path, LOCK), label=label, user="job",
                                  in_use=OutputInUseError)
            lease.acquire()
            self._lease = lease
        except (DataError, OutputInUseError):
            raise
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot be written ({_reason(exc)})", file=self.path) from None
        try:
            self._remove_stale_staging()
            if not is_url(self.path):
                os.makedirs(self.staging, exist_ok=True)
        except OSError as exc:
            self.abort()
            raise DataError(f"cannot be written ({_reason(exc)})", file=self.path) from None
        except BaseException:
            self.abort()
            raise

    def _remove_stale_staging(self) -> None:
        """Remove other jobs' staging folders (under the lease: see the module)."""
        fs = self.storage.fs
        staging = self._join(STAGING)
        fs.invalidate_cache(staging)
        if not fs.exists(staging):
            return
        stale = [p for p in fs.ls(staging, detail=False)
                 if os.path.basename(p.rstrip("/")) != self.job]
        for path in stale:  # best effort: what stays is removed by the next job
            with contextlib.suppress(OSError):
                fs.rm(path, recursive=True)

    def _check_held(self) -> None:
        if self._lease is None:
            raise RuntimeError(f"{self!r}: commit() without prepare() in this process")
        self._lease.check_held()

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
        """Make the staged ``parts`` the output: previous parts go, ``_SUCCESS`` comes last.

        Needs the lease taken by :meth:`prepare`, and releases it (with the staging
        folder) once committed."""
        self._check_held()  # a job that lost its lease changes nothing visible
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
        body = json.dumps({"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                           "job": self.job,
                           "parts": [{"name": name, "rows": part["rows"]}
                                     for name, part in zip(names, parts, strict=True)],
                           **summary}, indent=1).encode()
        self._check_held()  # still ours after the moves: else no _SUCCESS, readers refuse it
        fs.pipe_file(manifest, body)
        self.abort()  # the empty staging folder, and the lease

    def abort(self) -> None:
        """Remove this job's staged parts and release the lease (best effort: a failure is
        already being raised). Does nothing unless :meth:`prepare` took the lease."""
        if self._lease is None:
            return
        fs = self.storage.fs
        with contextlib.suppress(OSError):
            if fs.exists(self.staging):
                fs.rm(self.staging, recursive=True)
        with contextlib.suppress(OSError):
            if not is_url(self.path):
                os.rmdir(self._join(STAGING))  # only when no other job left parts in it
        lease, self._lease = self._lease, None
        lease.release()
