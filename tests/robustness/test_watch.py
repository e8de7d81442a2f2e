"""Hostile watched folders: ``streammix score MODEL --watch IN -o OUT --once``.

IN holds two good Parquet files (a, z: 1000 rows each) and something hostile. Every
good file is scored in full, nothing from outside IN is read (ids from 900 000 mark
rows outside), nothing hangs; exit 0 or 2 are both fine. A damaged progress file in
OUT is refused in one line naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ._harness import (
    HANG,
    LOST,
    OTHER,
    SILENT,
    Case,
    Dataset,
    Failure,
    Run,
    check,
    crashed,
    expect_error,
    last_line,
    streammix_cli,
)


def watch(dataset: Dataset, ws: Path, incoming: Path, outdir: Path) -> Run:
    return streammix_cli("score", dataset.model, "--watch", incoming, "-o", outdir, "--once",
                         "--poll-interval", 0, cwd=ws)


def scored(outdir: Path) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """The ids in each scores file of ``outdir``, and the files that cannot be read."""
    found, unreadable = {}, []
    for path in sorted(outdir.glob("*.scores.parquet")):
        try:
            found[path.name] = pq.read_table(path, columns=["id"])["id"].to_numpy()
        except (OSError, KeyError, pa.ArrowException) as exc:
            unreadable.append((LOST, f"{path.name} unreadable ({str(exc)[:80]})"))
    return found, unreadable


def check_watch(r: Run, outdir: Path, good: dict[str, int], forbidden: list[str]
                ) -> list[Failure]:
    """Every good file scored in full, nothing from outside; exit 0 or 2 both fine."""
    failures = crashed(r)
    if failures and failures[0][0] == HANG:
        return failures
    found, unreadable = scored(outdir)
    failures += unreadable
    for name, rows in good.items():
        ids = found.get(f"{name[:-8]}.scores.parquet")
        if ids is None or len(ids) != rows:
            failures.append((LOST, f"{name} not scored" if ids is None
                             else f"{name}: {len(ids)} of {rows} rows"))
    for name in forbidden:
        if f"{name[:-8]}.scores.parquet" in found:
            failures.append((SILENT, f"{name} was scored"))
    if any((ids >= 900_000).any() for ids in found.values()):
        failures.append((SILENT, "ids from outside the folder copied into the output"))
    if r.code not in (0, 2) and not failures:
        failures.append((OTHER, f"exit {r.code}: {last_line(r.stderr)}"))
    return failures


def folders(dataset: Dataset, ws: Path) -> tuple[Path, Path, dict[str, int]]:
    """IN with a.parquet and z.parquet (1000 rows each), OUT (not made), the good files."""
    incoming, outdir = ws / "in", ws / "out"
    dataset.write_parquet(incoming / "a.parquet", slice(0, 1000))
    dataset.write_parquet(incoming / "z.parquet", slice(3000, 4000))
    return incoming, outdir, {"a.parquet": 1000, "z.parquet": 1000}


def outside(dataset: Dataset, ws: Path) -> Path:
    """A Parquet file outside IN, its ids from 900 000."""
    return dataset.write_parquet(ws / "outside" / "secret.parquet", slice(0, 500),
                                 id_offset=900_000)


# -- something that is not a regular file inside IN ---------------------------------------------
def symlink_file(dataset: Dataset, ws: Path, incoming: Path) -> str:
    """IN/link.parquet -> a Parquet file outside IN."""
    (incoming / "link.parquet").symlink_to(outside(dataset, ws))
    return "link.parquet"


def symlink_dir(dataset: Dataset, ws: Path, incoming: Path) -> str:
    """IN/d.parquet -> a directory of Parquet files outside IN."""
    (incoming / "d.parquet").symlink_to(outside(dataset, ws).parent, target_is_directory=True)
    return "d.parquet"


def fifo(dataset: Dataset, ws: Path, incoming: Path) -> str:
    """IN/f.parquet is a FIFO nobody writes to."""
    os.mkfifo(incoming / "f.parquet")
    return "f.parquet"


def unread_case(name, plant) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        incoming, outdir, good = folders(dataset, ws)
        planted = plant(dataset, ws, incoming)
        return check_watch(watch(dataset, ws, incoming, outdir), outdir, good, [planted])
    return Case(name, job)


@pytest.mark.parametrize("case", [
    unread_case("symlink-file-outside", symlink_file).param(),
    unread_case("symlink-dir-outside", symlink_dir).param(),
    unread_case("fifo", fifo).param(),
])
def test_only_regular_files_inside_are_read(case, sweep):
    check(sweep, case)


# -- a damaged file between good ones -----------------------------------------------------------
def damaged_between(dataset: Dataset, ws: Path) -> list[Failure]:
    """IN/b.parquet is cut in half: a and z are scored on the first run and still are after
    a rerun; exit 0 or 2 either way."""
    incoming, outdir, good = folders(dataset, ws)
    whole = dataset.write_parquet(ws / "b-whole.parquet", slice(1000, 2000)).read_bytes()
    (incoming / "b.parquet").write_bytes(whole[: len(whole) // 2])
    failures = [(kind, f"first run: {why}") for kind, why in
                check_watch(watch(dataset, ws, incoming, outdir), outdir, good, [])]
    failures += [(kind, f"rerun: {why}") for kind, why in
                 check_watch(watch(dataset, ws, incoming, outdir), outdir, good, [])]
    return failures


@pytest.mark.parametrize("case", [Case("damaged-file-between", damaged_between).param()])
def test_damaged_file_loses_no_other(case, sweep):
    check(sweep, case)


# -- a damaged progress file ----------------------------------------------------------------------
def progress_case(name, content: str) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        incoming, outdir, _ = folders(dataset, ws)
        outdir.mkdir()
        (outdir / ".streammix-watch.json").write_text(content)
        return expect_error(watch(dataset, ws, incoming, outdir), names=".streammix-watch.json")
    return Case(name, job)


@pytest.mark.parametrize("case", [
    progress_case("progress-not-json", "{not json").param(),
    progress_case("progress-json-list", "[1, 2]").param(),
])
def test_damaged_progress_file_is_refused(case, sweep):
    check(sweep, case)
