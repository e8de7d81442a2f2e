"""``score``: a stream on stdin, a dataset, or a watched folder, through the scoring wing."""

from __future__ import annotations

import contextlib
import os

import click

from ..io.storage import is_url
from ..scoring import adaptive
from ..scoring.adaptive import AdaptiveScoring
from ..scoring.batch import score_to_parquet
from ..scoring.configure import DEFAULT_CONTAMINATION, scoring_for
from ..scoring.pipeline import TOP_FEATURES, require_threshold
from ..scoring.records import MAX_DEPTH, MAX_LATENCY_MS, MAX_RECORD_BYTES, MICRO_BATCH
from ..scoring.scorer import AnomalyScorer
from ..scoring.stdin import score_lines
from ..scoring.watch import POLL_SECONDS
from ..scoring.watch import watch as watch_folder
from . import options
from .app import main
from .options import (
    CONTAMINATION,
    OutputPath,
    cluster_options,
    load_model,
    say,
    verbosity,
    verbosity_options,
)

_STREAM = "to a stream on stdin (DATA -) or a record file (.jsonl, .ndjson, .csv)"
_STDIN = "to a stream on stdin (DATA -; a record file's extension names its format)"
_TABLE = ("to a Parquet/Zarr DATA or --watch (stdin and record files are scored as streams, "
          "their outputs to stdout)")
#: Record files are scored as a stream, like stdin; the extension names the format.
RECORD_FILES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def record_format(data: str) -> str | None:
    """The format of ``data`` when it is a record file (JSON lines or CSV), else None."""
    return RECORD_FILES.get(os.path.splitext(data.lower())[1]) if data != "-" else None


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data", default="-")
@click.option("-o", "--output", type=OutputPath("either", urls=True),
              help="Parquet file of scores (DATA), or a folder or URL prefix (one part per "
                   "chunk, written by the workers, then committed); with --watch a folder.")
@click.option("--contamination", type=CONTAMINATION,
              help="Calibrate on DATA itself: flag this fraction of it.")
@click.option("--threshold", type=float, help="Use this score threshold.")
@click.option("--id-field", default="id", show_default=True,
              help="Field or column passed through to the output.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "jsonl", "csv"]),
              help="Format of stdin records (a record file's extension names its own).")
@click.option("--micro-batch", "micro_batch", default=MICRO_BATCH, type=click.IntRange(1),
              help="stdin: records scored together (at most).")
@click.option("--max-latency-ms", default=MAX_LATENCY_MS, show_default=True,
              type=click.FloatRange(0),
              help="Score a partial batch this long after its first record arrived.")
@click.option("--top-features", default=TOP_FEATURES, show_default=True, type=click.IntRange(0))
@click.option("--max-record-bytes", default=MAX_RECORD_BYTES, show_default=True,
              type=click.IntRange(1),
              help="Longer stdin records are error records (and read no further).")
@click.option("--max-depth", default=MAX_DEPTH, show_default=True,
              type=click.IntRange(1),
              help="JSON records nested deeper are error records.")
@click.option("--adapt", is_flag=True,
              help="stdin: adapt to drift: the model learns from the records its calibrated "
                   "model calls typical, the threshold follows the model (a gaussian "
                   "mixture model; docs/user-guide.md, adaptive scoring).")
@click.option("--forgetting-factor", default=adaptive.FORGETTING_FACTOR, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="--adapt: per record; the model remembers about 1/(1-f) records.")
@click.option("--window", default=adaptive.WINDOW, show_default=True,
              type=click.IntRange(adaptive.BLOCK),
              help="--adapt: records between two moves of the threshold, and gathered after a "
                   f"drift alarm (at least a block, {adaptive.BLOCK} records).")
@click.option("--drift/--no-drift", default=None,
              help="stdin: a Page-Hinkley test on the scores writes a drift event record "
                   '({"event": "drift", ...}) after the record where it fires '
                   "[default: with --adapt].")
@click.option("--snapshot", "snapshot", type=OutputPath(),
              help="--adapt: keep model, threshold and state in this file; a restart with the "
                   "same options resumes from it.")
@click.option("--snapshot-every", default=adaptive.SNAPSHOT_EVERY, show_default=True,
              type=click.IntRange(1),
              help="--adapt: write the snapshot after this many records...")
@click.option("--snapshot-seconds", default=adaptive.SNAPSHOT_SECONDS, show_default=True,
              type=click.FloatRange(0, min_open=True), help="...or this many seconds.")
@click.option("--watch", type=click.Path(file_okay=False, exists=True),
              help="Score each new Parquet file appearing in this folder into --output.")
@click.option("--once", is_flag=True, help="With --watch: stop when no new file is left.")
@click.option("--poll-interval", default=POLL_SECONDS, show_default=True, type=click.FloatRange(0))
@cluster_options
@verbosity_options
def score(model_path, data, output, contamination, threshold, id_field, fmt, micro_batch,
          max_latency_ms, top_features, max_record_bytes, max_depth, adapt, forgetting_factor,
          window, drift, snapshot, snapshot_every, snapshot_seconds, watch, once, poll_interval,
          scheduler, workers, verbose, quiet):
    """Score records for anomalies: a stream on stdin, a dataset, or a watched folder.

    \b
    With DATA "-" (the default), read JSON lines or CSV (with a header) from
    stdin and write one JSON line per record, in order: the id, score,
    anomaly flag, cluster and explanation, or an error for a bad record.
    A summary goes to stderr at the end. A DATA file of records (.jsonl,
    .ndjson or .csv) is scored the same way, as a stream; Parquet or Zarr
    DATA is scored into -o OUT.parquet.

    \b
    Examples:
      tail -f events.jsonl | streammix score model.npz -
      streammix score model.npz events.jsonl > scored.jsonl
      streammix score model.npz data/ -o scores.parquet --contamination 0.01
      streammix score model.npz --watch incoming/ -o scored/
      streammix score model.npz - --adapt --snapshot state.npz < events.jsonl
    """
    records = record_format(data)
    _refuse_unused(data, watch, adapt, snapshot, threshold, contamination)
    if records and not os.path.isfile(data):
        raise click.UsageError(f"{data}: no such record file")
    model = load_model(model_path, scheduler, workers, verbosity(verbose, quiet))
    if (data != "-" and not records) or watch:
        scorer = AnomalyScorer(model, contamination=contamination or DEFAULT_CONTAMINATION,
                               threshold=threshold, top_features=top_features)
        if threshold is not None:  # as on a stream: a threshold that flags all or nothing
            scorer._warn_if_outside(threshold)
        if watch:
            if not output:
                raise click.UsageError("--watch needs -o OUTDIR")
            if is_url(output):
                raise click.UsageError("--watch writes its scores and progress to a local "
                                       "folder; give one as -o")
            require_threshold(scorer)
            watch_folder(scorer, watch, output, id_field=id_field, once=once,
                         poll_interval=poll_interval, report=_report_file)
            return
        if not output:
            raise click.UsageError("scoring DATA needs -o OUT.parquet")
        if threshold is None and contamination is not None:
            scorer.fit(data)
        require_threshold(scorer)
        counts = score_to_parquet(scorer, data, output, id_field=id_field)
        say(f"{counts['rows']:,} rows, {counts['anomalies']:,} anomalies; wrote {output}", quiet)
        return
    scoring = scoring_for(model, threshold=threshold, contamination=contamination,
                          top_features=top_features, adapt=adapt, drift=drift,
                          forgetting_factor=forgetting_factor, window=window,
                          snapshot=snapshot, snapshot_every=snapshot_every,
                          snapshot_seconds=snapshot_seconds)
    if getattr(scoring, "resumed", False):
        say(f"resumed from {snapshot}: {scoring.records:,} records scored before, "
            f"{scoring.applied:,} applied to the model", quiet)
    with open(data, "rb") if records else contextlib.nullcontext() as source:
        counts = score_lines(scoring, source, fmt=records or fmt, id_field=id_field,
                             batch_size=micro_batch, max_latency_ms=max_latency_ms,
                             max_record_bytes=max_record_bytes, max_depth=max_depth)
    if counts is not None:
        click.echo(f"{counts['records']} records, {counts['anomalies']} anomalies, "
                   f"{counts['errors']} errors{_adaptation(scoring, counts)}", err=True)


def _adaptation(scoring, counts) -> str:
    """What the adaptive scorer did and refused (docs/user-guide.md, adaptive scoring)."""
    if not isinstance(scoring, AdaptiveScoring):
        return ""
    return (f", {counts['drift events']} drift events, {scoring.relearns} relearnt, "
            f"{scoring.refused_relearns} not relearnt (mostly normal after the alarm), "
            f"{scoring.refused_updates} degenerate updates refused")


def _refuse_unused(data, watch, adapt, snapshot, threshold, contamination):
    """Every option given must do what it says here, or the command stops before any work."""
    ctx = click.get_current_context()
    # a record file is a stream (scored line by line to stdout) that is not stdin
    stdin = data == "-" and not watch
    stream = stdin or bool(record_format(data))
    table = not stream and not watch
    if watch and data != "-":
        raise click.UsageError("--watch scores the files appearing in its folder: give no DATA")
    if stream and contamination is not None and not adapt:
        raise click.UsageError("a stream cannot calibrate itself: calibrate the model first "
                               "(streammix calibrate) or give --threshold; with --adapt, "
                               "--contamination is the fraction it keeps flagging")
    if table and contamination is not None and threshold is not None:
        raise click.UsageError("--contamination calibrates a threshold on DATA, --threshold "
                               "gives one: give one of them")
    options.refuse_unused(ctx, [
        ("output", not stream, _TABLE),
        ("scheduler", not stream, _TABLE),
        ("workers", not stream, _TABLE),
        ("contamination", table or adapt, "to DATA (calibrating on it) or with --adapt"),
        ("fmt", stdin, _STDIN),
        *((name, stream, _STREAM) for name in (
            "micro_batch", "max_latency_ms", "max_record_bytes", "max_depth",
            "top_features", "adapt", "drift", "snapshot")),
        ("forgetting_factor", stream and adapt, "with --adapt"),
        ("window", stream and adapt, "with --adapt"),
        ("snapshot_every", snapshot is not None, "with --snapshot"),
        ("snapshot_seconds", snapshot is not None, "with --snapshot"),
        ("once", bool(watch), "with --watch"),
        ("poll_interval", bool(watch), "with --watch"),
    ])


def _report_file(name, counts):
    """One line per watched file: its counts, or why it was not scored."""
    if isinstance(counts, str):
        click.echo(f"{name}: not scored: {counts}", err=True)
    else:
        click.echo(f"{name}: {counts['rows']} rows, {counts['anomalies']} anomalies", err=True)
