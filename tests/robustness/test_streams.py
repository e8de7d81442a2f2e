"""Malformed record streams on stdin: ``streammix score MODEL -``.

One strict-JSON output line per input record, in order: a bad record is one error
line and never ends the stream; a good record is scored; an extreme one is flagged,
its score finite or null, never NaN.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ._harness import (
    FEATURES,
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
    last_line,
    streammix_cli,
)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def check_stream(r: Run, expect: list[str]) -> list[Failure]:
    """One strict-JSON line per record, in order; "error", "scored" or "anomaly" each."""
    failures = crashed(r)
    if failures and failures[0][0] == HANG:
        return failures
    lines = r.stdout.splitlines()
    if len(lines) != len(expect):
        failures.append((LOST, f"{len(lines)} output lines for {len(expect)} records (exit "
                               f"{r.code}: {last_line(r.stderr)[:80]})"))
    for i, (line, want) in enumerate(zip(lines, expect, strict=False)):
        try:
            out = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
        except ValueError as exc:
            failures.append((SILENT, f"line {i} is not strict JSON ({str(exc)[:60]})"))
            continue
        if not isinstance(out, dict):
            failures.append((SILENT, f"line {i} is not an object"))
        elif want == "error" and "error" not in out:
            failures.append((SILENT, f"bad record {i} scored, not an error"))
        elif want != "error" and ("error" in out or "score" not in out):
            failures.append((SILENT, f"record {i} not scored: {str(out.get('error'))[:80]}"))
        elif want == "anomaly" and out.get("anomaly") is not True:
            failures.append((SILENT, f"record {i} not flagged (score {out.get('score')})"))
    if not failures and r.code != 0:
        failures.append((OTHER, f"exit {r.code}: {last_line(r.stderr)}"))
    return failures


def stream_case(name, lines, expect: list[str]) -> Case:
    """``lines(dataset)`` on stdin, one output line per entry of ``expect``."""
    def job(dataset: Dataset, ws) -> list[Failure]:
        stdin = b"".join(line + b"\n" for line in lines(dataset))
        r = streammix_cli("score", dataset.model, "-", cwd=ws, stdin=stdin)
        return check_stream(r, expect)
    return Case(name, job)


# -- one bad line between good ones ---------------------------------------------------------------
def with_x0(text: bytes) -> bytes:
    return b'{"id": 1, "x0": ' + text + b', "x1": 0.5, "x2": 0.5, "x3": 0.5}'


def binary_junk() -> bytes:
    data = np.random.default_rng(7).integers(0, 256, 300, dtype=np.uint8).tobytes()
    return data.replace(b"\n", b"").replace(b"\r", b"")


# (name, middle line, expectation of its output). Each stream is: good, middle, good.
MIDDLES = [
    ("int-400-digits", with_x0(b"9" * 400), "error"),  # overflows a float
    ("int-5000-digits", with_x0(b"9" * 5000), "error"),  # beyond Python's int digits limit
    ("nested-100000", b"[" * 100_000, "error"),  # recursion depth
    ("string-1mb", with_x0(b'"' + b"a" * (1 << 20) + b'"'), "error"),
    ("invalid-utf8", with_x0(b'"\xc3\x28\xff\xfe"'), "error"),
    ("binary-junk", binary_junk(), "error"),
    # Extreme but finite values: scored, flagged; the score finite or null, never NaN.
    ("all-1e300", b'{"id": 1, "x0": 1e300, "x1": 1e300, "x2": 1e300, "x3": 1e300}', "anomaly"),
    ("array-1e200", b"[1e200, -1e200, 0, 0]", "anomaly"),
    ("nan-literal", b"NaN", "error"),
    ("nan-field", with_x0(b"NaN"), "error"),
    ("empty-object", b"{}", "error"),
    ("array-wrong-length", b"[1, 2, 3]", "error"),
    ("json-string", b'"hello"', "error"),
    ("json-null", b"null", "error"),
    # The second red team (issue 29): ids no output can carry; legal raw line separators.
    ("id-lone-surrogate", b'{"id": "\\ud800", "x0": 0.5, "x1": 0.5, "x2": 0.5, "x3": 0.5}',
     "error"),
    ("id-400-digits", b'{"id": 1' + b"0" * 400 + b', "x0": 0.5, "x1": 0.5, "x2": 0.5, "x3": 0.5}',
     "error"),
    ("id-with-u2028", '{"id": "a\u2028b\u0085", "x0": 0.5, "x1": 0.5, "x2": 0.5, "x3": 0.5}'
     .encode(), "scored"),
]


def between_good_ones(middle: bytes):
    return lambda dataset: [dataset.record(0, 0), middle, dataset.record(2, 2)]


@pytest.mark.parametrize("case", [
    stream_case(name, between_good_ones(middle), ["scored", want, "scored"]).param()
    for name, middle, want in MIDDLES])
def test_one_line_between_good_ones(case, sweep):
    check(sweep, case)


# -- more streams -------------------------------------------------------------------------------
def csv_rows(dataset: Dataset, rows) -> list[bytes]:
    return [(f"{i}," + ",".join(repr(float(v)) for v in dataset.X[i])).encode() for i in rows]


CSV_HEADER = ("id," + ",".join(FEATURES)).encode()


def junk_first(dataset: Dataset) -> list[bytes]:
    """A junk first line, then 3 good JSON records."""
    return [b"%%% not a record %%%", *(dataset.record(i, i) for i in range(3))]


def csv_long_field(dataset: Dataset) -> list[bytes]:
    """CSV: header, good row, a row with a 140 000-character field, good row."""
    good = csv_rows(dataset, [0, 2])
    return [CSV_HEADER, good[0], b"1," + b"a" * 140_000 + b",0.5,0.5,0.5", good[1]]


@pytest.mark.parametrize("case", [
    stream_case("junk-first-line", junk_first, ["error", "scored", "scored", "scored"]).param(),
    stream_case("csv-field-140k", csv_long_field, ["scored", "error", "scored"]).param(),
    # The header only: no output line, exit 0.
    stream_case("csv-header-only", lambda dataset: [CSV_HEADER], []).param(),
])
def test_stream(case, sweep):
    check(sweep, case)
