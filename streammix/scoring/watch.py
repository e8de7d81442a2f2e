"""Watching a folder: score each new Parquet file into an output folder, once."""

from __future__ import annotations

import json
import os
import time

from ..exceptions import DataError, StreammixError
from ..io.atomic import atomic_write, remove_stale_temporaries
from .batch import score_to_parquet
from .scorer import AnomalyScorer

PROGRESS_FILE = ".streammix-watch.json"
#: How often the folder is looked at, by default (seconds).
POLL_SECONDS = 1.0


def _load_progress(outdir) -> dict:
    """The watcher's record of finished and failed files, checked field by field."""
    path = os.path.join(outdir, PROGRESS_FILE)
    if not os.path.exists(path):
        return {"done": set(), "failed": {}}
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        done, failed = saved["done"], saved.get("failed", {})
        if not (isinstance(done, list) and all(isinstance(n, str) for n in done)):
            raise ValueError("'done' must be a list of file names")
        if not (isinstance(failed, dict) and all(
                isinstance(v, dict) and isinstance(v.get("error"), str) for v in failed.values())):
            raise ValueError("'failed' must map file names to their errors")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise DataError(f"the watcher's progress file is damaged ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); delete it to score every file of the folder again",
                        file=path) from None
    return {"done": set(done), "failed": failed}


def _save_progress(outdir, progress):
    with atomic_write(os.path.join(outdir, PROGRESS_FILE), "w") as handle:
        json.dump({"done": sorted(progress["done"]), "failed": progress["failed"]}, handle)


def _identity(stat) -> list:
    return [stat.st_size, stat.st_mtime_ns]


def _new_files(directory, progress, skipped) -> list:
    """Names of the regular ``*.parquet`` files inside ``directory`` not yet handled.

    Symlinks, directories, FIFOs and other special files are never opened
    (``skipped`` collects them, to report once); a file that failed is tried
    again only once it has changed.
    """
    names = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if not name.endswith(".parquet") or name.startswith((".", "_")) \
                    or name in progress["done"]:
                continue
            if not entry.is_file(follow_symlinks=False):
                skipped.setdefault(name, "not a regular file inside the folder (a symlink, a "
                                         "directory or a special file): not read")
                continue
            failed = progress["failed"].get(name)
            if failed is None or failed.get("file") != _identity(entry.stat(follow_symlinks=False)):
                names.append(name)
    return sorted(names)


def watch(scorer: AnomalyScorer, directory, outdir, *, id_field="id", once=False,
          poll_interval=POLL_SECONDS, report=None):
    """Score each new Parquet file of ``directory`` into ``outdir``, as files appear.

    Producers must write files atomically (a temporary or hidden name, then a
    rename). Only regular files directly inside ``directory`` are read, never
    symlinks, subdirectories or special files. ``outdir`` keeps the names of
    the files done in ``.streammix-watch.json``, written after each file's
    scores, so a restart neither skips nor repeats a file. A file that cannot
    be scored is recorded there with its error (quarantined: tried again only
    once it changes) and the watcher goes on. With ``once``, stop when no new
    file is left; otherwise poll every ``poll_interval`` seconds.

    ``report(name, counts_or_error)`` is told of each file: its counts, or the
    error (a string) for a file that failed or was skipped.
    """
    os.makedirs(outdir, exist_ok=True)
    remove_stale_temporaries(os.path.join(outdir, PROGRESS_FILE))  # a killed watcher's
    progress = _load_progress(outdir)
    skipped, reported = {}, set()
    while True:
        pending = _new_files(directory, progress, skipped)
        for name in sorted(set(skipped) - reported):
            reported.add(name)
            if report is not None:
                report(name, skipped[name])
        for name in pending:
            path = os.path.join(directory, name)
            stem = name[: -len(".parquet")]
            identity = None
            try:
                identity = _identity(os.stat(path, follow_symlinks=False))
                counts = score_to_parquet(scorer, path,
                                          os.path.join(outdir, f"{stem}.scores.parquet"),
                                          id_field=id_field)
            except (StreammixError, ValueError, OSError) as exc:
                progress["failed"][name] = {"error": str(exc), "file": identity}
                counts = str(exc)
            else:
                progress["done"].add(name)
                progress["failed"].pop(name, None)
            _save_progress(outdir, progress)
            if report is not None:
                report(name, counts)
        if once and not pending:
            return progress["done"]
        if not pending:
            time.sleep(poll_interval)
