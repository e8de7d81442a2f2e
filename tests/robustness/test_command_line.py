"""Bad command-line input: refused in one line; a reader that goes away; a quiet fit.

Bad input exits 2 with one "Error: ..." line (naming the path or column at fault) and
writes no model. A reader that closes stdout early leaves no "Broken pipe" or
traceback on stderr. ``fit -q`` says nothing at all.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ._harness import (
    OTHER,
    QUICK,
    TIMEOUT,
    Case,
    Dataset,
    Failure,
    Run,
    broken_pipe_noise,
    check,
    crashed,
    expect_error,
    last_line,
    piped,
    streammix_cli,
)


def fit_into(dataset: Dataset, ws: Path, data, *extra, timeout=TIMEOUT) -> Run:
    return streammix_cli("fit", data, "-k", 3, "-o", ws / "m.npz", "--seed", 0, *extra,
                         cwd=ws, timeout=timeout)


# -- refused in one line ------------------------------------------------------------------------
def scheduler_not_an_address(dataset: Dataset, ws: Path) -> list[Failure]:
    """fit --scheduler notanaddress: exit 2 in one line, within 20 s."""
    r = fit_into(dataset, ws, dataset.data, "--scheduler", "notanaddress", timeout=QUICK)
    return expect_error(r, output=ws / "m.npz")


def fit_missing_data(dataset: Dataset, ws: Path) -> list[Failure]:
    """A data path that does not exist: exit 2 naming it."""
    return expect_error(fit_into(dataset, ws, ws / "no-such-data"), names="no-such-data",
                        output=ws / "m.npz")


def score_missing_data(dataset: Dataset, ws: Path) -> list[Failure]:
    """A data path that does not exist: exit 2 naming it, no scores file."""
    r = streammix_cli("score", dataset.model, ws / "no-such-data", "-o", ws / "s.parquet",
                      cwd=ws)
    return expect_error(r, names="no-such-data", output=ws / "s.parquet")


def mixed_schema(change: str):
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        """A folder of two files whose schemas differ: exit 2."""
        folder = ws / "mixed"
        dataset.write_parquet(folder / "part-0.parquet", slice(0, 5000))
        table = pq.read_table(dataset.write_parquet(ws / "tmp.parquet", slice(5000, 10000)))
        if change == "extra-column":
            table = table.append_column("x4", table["x0"])
        else:  # a bool column in place of x1
            table = table.set_column(2, "x1", pa.array(table["x1"].to_numpy() > 0))
        pq.write_table(table, folder / "part-1.parquet")
        return expect_error(fit_into(dataset, ws, folder), output=ws / "m.npz")
    return job


def string_column(dataset: Dataset, ws: Path) -> list[Failure]:
    """A Parquet column of strings: exit 2 naming the column."""
    table = pq.read_table(dataset.write_parquet(ws / "tmp.parquet", slice(0, 5000)))
    words = pa.array([f"row-{i}" for i in range(len(table))])
    pq.write_table(table.set_column(2, "x1", words), ws / "strings.parquet")
    return expect_error(fit_into(dataset, ws, ws / "strings.parquet"), names="x1",
                        output=ws / "m.npz")


def zarr_no_features(dataset: Dataset, ws: Path) -> list[Failure]:
    """A Zarr array of shape (100, 0): exit 2."""
    import zarr

    zarr.create_array(store=str(ws / "empty.zarr"), shape=(100, 0), chunks=(100, 1),
                      dtype="float64")
    return expect_error(fit_into(dataset, ws, ws / "empty.zarr"), output=ws / "m.npz")


@pytest.mark.parametrize("case", [
    Case("fit-scheduler-notanaddress", scheduler_not_an_address).param(),
    Case("fit-missing-data", fit_missing_data).param(),
    Case("score-missing-data", score_missing_data).param(),
    Case("schema-extra-column", mixed_schema("extra-column")).param(),
    Case("schema-bool-column", mixed_schema("bool-column")).param(),
    Case("string-column", string_column).param(),
    Case("zarr-100x0", zarr_no_features).param(),
])
def test_bad_input_is_refused_in_one_line(case, sweep):
    check(sweep, case)


# -- stdout closed early by the reader -----------------------------------------------------------
def many_records(dataset: Dataset) -> bytes:
    return b"".join(dataset.record(i, i) + b"\n" for i in range(5000))


def pipe_case(name, args, reader, stdin=None) -> Case:
    def job(dataset: Dataset, ws: Path) -> list[Failure]:
        full = [dataset.model if a == "MODEL" else a for a in args]
        return broken_pipe_noise(piped(full, reader, ws,
                                       stdin=stdin(dataset) if stdin else None))
    return Case(name, job)


@pytest.mark.parametrize("case", [
    pipe_case("info|head-2", ["info", "MODEL"], ["head", "-2"]).param(),
    pipe_case("info|true", ["info", "MODEL"], ["true"]).param(),  # a reader that reads nothing
    pipe_case("score-stdin|head-2", ["score", "MODEL", "-"], ["head", "-2"],
              stdin=many_records).param(),
])
def test_closed_stdout_is_quiet(case, sweep):
    check(sweep, case)


# -- -q ------------------------------------------------------------------------------------------
def quiet_unconverged_fit(dataset: Dataset, ws: Path) -> list[Failure]:
    """fit -q that stops at --max-iter 1 unconverged: exit 0 and nothing at all on stderr."""
    r = fit_into(dataset, ws, dataset.data, "--max-iter", 1, "-q")
    failures = crashed(r)
    if failures:
        return failures
    if r.code != 0:
        return [(OTHER, f"exit {r.code}: {last_line(r.stderr)}")]
    if r.stderr.strip():
        return [(OTHER, f"-q, yet stderr says: {r.stderr.strip().splitlines()[0][:100]}")]
    return []


@pytest.mark.parametrize("case", [Case("fit-q-no-converge", quiet_unconverged_fit).param()])
def test_quiet_fit_says_nothing(case, sweep):
    check(sweep, case)
