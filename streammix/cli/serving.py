"""``serve``: a model's scores over HTTP, or from one Redis stream into another."""

from __future__ import annotations

import hashlib
import importlib
import os

import click

from ..estimators import load
from ..exceptions import StreammixError
from ..scoring import adaptive
from ..scoring.configure import scoring_for
from ..scoring.http import ANOMALY_RATE_WINDOW, MAX_BODY_BYTES
from ..scoring.pipeline import TOP_FEATURES
from ..scoring.records import MAX_RECORD_BYTES
from ..scoring.redis import BATCH, BLOCK_MS, CLAIM_IDLE_MS, consume
from .app import main
from .options import OutputPath, refuse_unused, say

_REDIS, _HTTP = "with --redis", "to HTTP (not with --redis)"
#: What each transport imports from the ``serve`` extra.
_EXTRA = {"http": ("starlette", "uvicorn", "prometheus_client"), "redis": ("redis",)}
#: The install line that works (the package is not on PyPI): README, Installing.
INSTALL_SERVE = "pip install -e '.[serve]'"


def _require_serving_extra(transport: str) -> None:
    """Refuse in one line when a module of the ``serve`` extra is missing.

    Parameters
    ----------
    transport : {"http", "redis"}
        The transport about to be served.

    Raises
    ------
    StreammixError
        Naming the missing module and the install command (without this, the
        first import deep in the command was a traceback).
    """
    for module in _EXTRA[transport]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise StreammixError(
                f"serve needs the serving extra ({module} is not installed): run "
                f"{INSTALL_SERVE} in a clone of streammix, or install the wheel with "
                "[serve] (README, Installing)") from None


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--http", "address", default=None,
              help="HOST:PORT to listen on (127.0.0.1: this machine only) [default: "
                   "127.0.0.1:8000 unless --redis].")
@click.option("--redis", "redis_url", help="Consume a Redis stream instead: "
                                             "redis://HOST:PORT/DB.")
@click.option("--stream", "stream_name", help="--redis: the input stream.")
@click.option("--group", default="streammix", show_default=True,
              help="--redis: the consumer group (created if missing).")
@click.option("--consumer", help="--redis: this consumer's name [default: host-pid].")
@click.option("--output", "output_stream", help="--redis: the output stream.")
@click.option("--batch", default=BATCH, show_default=True, type=click.IntRange(1),
              help="--redis: most entries scored at once.")
@click.option("--claim-idle-ms", default=CLAIM_IDLE_MS, show_default=True, type=click.IntRange(1),
              help="--redis: claim entries another consumer left pending this long.")
@click.option("--read-block-ms", default=BLOCK_MS, show_default=True,
              type=click.IntRange(1),
              help="--redis: how long one read waits for new entries (XREADGROUP BLOCK); "
                   "a partial batch is scored when it returns.")
@click.option("--max-latency-ms", "read_block_ms_old", type=click.IntRange(1), hidden=True,
              help="The old name of --read-block-ms.")
@click.option("--threshold", type=float,
              help="Use this score threshold [default: the model's calibrated one].")
@click.option("--adapt", is_flag=True, help="--redis: adaptive scoring (see score --adapt).")
@click.option("--drift/--no-drift", default=None,
              help="--redis: the drift alarm: an event entry after the entry where it fires "
                   "[default: with --adapt].")
@click.option("--snapshot", type=OutputPath(), help="--redis --adapt: its snapshot file.")
@click.option("--snapshot-every", default=adaptive.SNAPSHOT_EVERY, show_default=True,
              type=click.IntRange(1),
              help="--snapshot: write it after this many entries (and on a clean stop: "
                   "SIGTERM, SIGINT).")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
              help="A bearer token every request must carry (needed to listen beyond "
                   "127.0.0.1).")
@click.option("--max-body-bytes", default=MAX_BODY_BYTES, show_default=True,
              type=click.IntRange(1),
              help="Larger request bodies get 413.")
@click.option("--anomaly-rate-window", default=ANOMALY_RATE_WINDOW, show_default=True,
              type=click.IntRange(1),
              help="The streammix_anomaly_rate metric covers this many of the latest records "
                   "scored.")
@click.option("--top-features", default=TOP_FEATURES, show_default=True, type=click.IntRange(0))
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="Outputs carry the explanation (cluster, probability, distance, top "
                   "features), or only score and anomaly.")
@click.option("--max-record-bytes", default=MAX_RECORD_BYTES, show_default=True,
              type=click.IntRange(1),
              help="--redis: a larger entry is an error entry.")
def serve(model_path, address, redis_url, stream_name, group, consumer, output_stream, batch,
          claim_idle_ms, read_block_ms, read_block_ms_old, threshold, adapt, drift, snapshot,
          snapshot_every, token_file, max_body_bytes, anomaly_rate_window, top_features, explain,
          max_record_bytes):
    """Serve MODEL's anomaly scores over HTTP (Starlette on Uvicorn), or from one Redis
    stream into another (--redis: exactly once, adaptive with --adapt).

    \b
    POST /score   a JSON object, a JSON array, or NDJSON: one output per record
    GET /healthz  GET /model (what info shows)  GET /metrics (Prometheus)
    The model file is reloaded when it changes (requests in flight finish on
    the old one).

    \b
    Examples:
      streammix serve model.npz --http 127.0.0.1:8000
      curl -s localhost:8000/score -d '{"id": 1, "x0": 0.3, "x1": 2.0}'
      streammix serve model.npz --redis redis://127.0.0.1:6379/0 --stream events \\
        --output scores --adapt --snapshot state.npz
    """
    if read_block_ms_old is not None:
        read_block_ms = read_block_ms_old
    if redis_url and address:
        raise click.UsageError("--http and --redis: serve one of them (run two commands for "
                               "both)")
    if not redis_url and (adapt or snapshot or drift):
        # requests are answered concurrently and in any order: there is no one stream
        # whose order the model could follow, nor a position a snapshot could mark
        raise click.UsageError("--adapt, --drift and --snapshot are for --redis (or score - "
                               "--adapt); HTTP serves a fixed model")
    refuse_unused(click.get_current_context(), [
        *((name, bool(redis_url), _REDIS) for name in (
            "stream_name", "group", "consumer", "output_stream", "batch", "claim_idle_ms",
            "read_block_ms", "read_block_ms_old", "max_record_bytes")),
        ("snapshot_every", snapshot is not None, "with --snapshot"),
        ("token_file", not redis_url, _HTTP),
        ("max_body_bytes", not redis_url, _HTTP),
        ("anomaly_rate_window", not redis_url, _HTTP),
    ])
    if redis_url and not (stream_name and output_stream):
        raise click.UsageError("--redis needs --stream IN and --output OUT")
    _require_serving_extra("redis" if redis_url else "http")
    if redis_url:
        scoring = scoring_for(load(model_path), threshold=threshold, top_features=top_features,
                              adapt=adapt, drift=drift, snapshot=snapshot)
        say(f"scoring {stream_name} into {output_stream} with {model_path}{_digest(model_path)} "
            f"(group {group})")
        consume(scoring, redis_url, stream_name, group, output_stream, consumer=consumer,
                batch=batch, claim_idle_ms=claim_idle_ms, block_ms=read_block_ms,
                snapshot=snapshot, snapshot_every=snapshot_every, explain=explain,
                max_record_bytes=max_record_bytes)
        return
    import uvicorn

    from ..scoring.http import create_app

    address = address or "127.0.0.1:8000"
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {address!r}", param_hint="--http")
    token = None
    if token_file:
        with open(token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
    elif host not in ("127.0.0.1", "localhost", "::1"):
        raise click.UsageError(f"listening on {host} needs --token-file: without a token "
                               "anyone who reaches it can use it")
    app = create_app(model_path, token=token, max_body_bytes=max_body_bytes,
                     top_features=top_features, explain=explain, threshold=threshold,
                     anomaly_rate_window=anomaly_rate_window)
    say(f"serving {model_path}{_digest(model_path)} on http://{address} "
        "(POST /score, GET /healthz /model /metrics)")
    uvicorn.run(app, host=host, port=int(port), log_level="warning")


def _digest(model_path) -> str:
    """`` (sha256 0123456789ab)``: which model file is served, to tell copies and versions
    apart in logs (empty when the path is not a local file)."""
    if not os.path.isfile(model_path):
        return ""
    digest = hashlib.sha256()
    with open(model_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f" (sha256 {digest.hexdigest()[:12]})"
