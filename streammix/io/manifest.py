"""The ``_SUCCESS`` manifest of a partitioned output, and which parts a reader takes.

A streammix output folder (see :mod:`streammix.io.output`) is recognised by a
``_SUCCESS`` in streammix's manifest format, or, before its first commit, by
its ``_temporary/`` staging folder or its ``part-NNNNNN.parquet`` names. Its
readable content is exactly the parts its ``_SUCCESS`` lists: parts beside
them are another job's (one that is committing, or whose commit was cut
short), and a folder without ``_SUCCESS`` is being written or was left by a
killed job, so it is refused unless the caller asks to read it anyway.

The manifest is read as untrusted input: its size is bounded, its format and
version checked, and each part name must be a plain ``part-NNNNNN.parquet``
(no separator, no ``..``: nothing outside the folder can be named).
"""

from __future__ import annotations

import json
import re

from ..exceptions import DataError

#: Written last by a commit: the names of the parts and what they hold.
MANIFEST = "_SUCCESS"
#: Where a job writes its parts before the commit (one subfolder per job).
STAGING = "_temporary"
#: The lease or lock file of the job writing the output.
LOCK = "_lock"
MANIFEST_FORMAT = "streammix-output"
MANIFEST_VERSION = 1
#: Largest manifest read (a million parts take about 60 MB).
MAX_MANIFEST_BYTES = 64 << 20
#: What a reader does with an output folder that has no ``_SUCCESS``.
UNCOMMITTED = ("refuse", "read")

PART = re.compile(r"part-\d{6}\.parquet")


def check_uncommitted(uncommitted) -> str:
    if uncommitted not in UNCOMMITTED:
        raise ValueError(f"uncommitted={uncommitted!r}: expected one of "
                         f"{', '.join(map(repr, UNCOMMITTED))}")
    return uncommitted


def _parse(data: bytes, where: str) -> list[tuple[str, int]] | None:
    """The parts listed by a manifest's bytes; None if it is not a streammix manifest
    (another tool's marker); a DataError if it is one, but damaged or foreign."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    version = manifest.get("version")
    if type(version) is not int or version != MANIFEST_VERSION:
        raise DataError(f"is a manifest of version {json.dumps(version)[:20]}; this "
                        f"streammix reads version {MANIFEST_VERSION}", file=where)
    parts = manifest.get("parts")
    if not isinstance(parts, list) or not parts:
        raise DataError("lists no parts (damaged)", file=where)
    listed, seen = [], set()
    for n, part in enumerate(parts):
        name = part.get("name") if isinstance(part, dict) else None
        rows = part.get("rows") if isinstance(part, dict) else None
        if not isinstance(name, str) or not PART.fullmatch(name):
            raise DataError(f"part {n} is named {str(name)[:80]!r}, not part-NNNNNN.parquet "
                            "(damaged, or not written by streammix)", file=where)
        if type(rows) is not int or rows < 0:
            raise DataError(f"part {name} has no valid row count ({str(rows)[:20]})",
                            file=where)
        if name in seen:
            raise DataError(f"lists part {name} twice (damaged)", file=where)
        seen.add(name)
        listed.append((name, rows))
    return listed


def _glob(folder: str) -> str:
    """The glob that names a folder's parts (a glob is read as the files it matches)."""
    return f"{folder.rstrip('/')}/part-*.parquet"


def output_parts(fs, folder: str, files, folders=(), *, uncommitted: str = "refuse"
                 ) -> list[tuple[str, int]] | None:
    """The parts a reader of ``folder`` takes, when it is a streammix output folder.

    Parameters
    ----------
    fs : fsspec filesystem
        The filesystem of ``folder`` (local or an object store), to read ``_SUCCESS``.
    folder : str
        A folder or prefix, as ``fs`` names it.
    files, folders : iterable of str
        The names of the files and of the subfolders directly in ``folder``.
    uncommitted : {"refuse", "read"}
        For an output folder without a valid streammix ``_SUCCESS``: refuse
        it (a DataError), or read it as a plain folder.

    Returns
    -------
    list of (name, rows) or None
        The parts ``_SUCCESS`` lists, in order, with their row counts; None
        when ``folder`` is not a streammix output folder (or ``uncommitted``
        is ``"read"`` and it has no usable ``_SUCCESS``): read it as any folder.
    """
    check_uncommitted(uncommitted)
    files = set(files)
    looks_like_output = STAGING in set(folders) or any(PART.fullmatch(n) for n in files)
    where = f"{folder.rstrip('/')}/{MANIFEST}"
    listed = None
    if MANIFEST in files:
        data = fs.cat_file(where, start=0, end=MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise DataError(f"is larger than {MAX_MANIFEST_BYTES} bytes: not a manifest "
                            "streammix wrote", file=where)
        listed = _parse(data, where)
        if listed is None and looks_like_output and uncommitted == "refuse":
            raise DataError("is not a streammix manifest, but the folder holds streammix "
                            "parts (damaged?); read every part it holds with "
                            f"uncommitted='read', or a glob ({_glob(folder)})", file=where)
    elif looks_like_output and uncommitted == "refuse":
        raise DataError(f"is a streammix output without {MANIFEST}: a job is writing it, or "
                        "was killed before its commit; read it once a job has committed, or "
                        f"read the parts it holds with uncommitted='read', or a glob "
                        f"({_glob(folder)})", file=folder)
    if listed is None:
        return None
    missing = [name for name, _ in listed if name not in files]
    if missing and uncommitted == "read":
        return None
    if missing:
        raise DataError(f"lists {len(missing)} part(s) that are missing ({missing[0]}...): "
                        "a job is committing a new output, or parts were removed; read it "
                        "again once that job has finished", file=where)
    return listed
