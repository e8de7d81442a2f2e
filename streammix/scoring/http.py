"""The HTTP scoring service: Starlette on Uvicorn, Prometheus metrics.

``POST /score`` takes a JSON object (one output object back), a JSON array
(an array back) or NDJSON (``application/x-ndjson``: NDJSON back, split on
``\\n`` only), one output per input record in order, each as ``streammix
score MODEL -`` writes it (a bad record is an error record in its place).
``GET /healthz``, ``GET /model`` (what ``streammix info`` shows) and ``GET
/metrics`` (Prometheus text).

Nothing a client sends makes a 500: a body that is not JSON is a 400 with a
JSON error, a body over the limit a 413 (read no further), more records in
flight than ``max_records_in_flight`` a 429 (try again later). With a token,
every request needs ``Authorization: Bearer TOKEN`` (compared in constant
time), else 401. A client that goes away mid-request is dropped quietly.

The model file is watched by a background task, once a second, never on a
request's path: when its content changes (a SHA-256 digest, so a copy with
the old size and timestamp is seen too) it is loaded from the bytes that were
digested, checked, and swapped in at once; requests in flight finish on the
model they started with. Only a regular file is read (a FIFO or a device
would block): anything else, or a file that fails to load, leaves the running
model in place and shows in ``/healthz``'s ``reload_error``.

Scoring and decoding run in Starlette's thread pool, off the event loop. One
process serves on one core's worth of Python: to use more cores, run one
process per core behind a proxy (docs/serving.md says why not ``--workers``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import io
import json
import os
import stat
import threading
import time

from ..estimators.persistence import load
from .configure import scoring_for
from .pipeline import TOP_FEATURES, Scoring, json_array, json_bytes, json_lines
from .records import MAX_DEPTH, RecordError, decode_body, split_ndjson

#: Largest request body, by default.
MAX_BODY_BYTES = 1 << 20
#: Records being decoded or scored at once, by default: at about 2 KB of Python objects
#: a record at the peak (100k tiny records in a 1 MiB body), 1M records is 2 GB.
MAX_RECORDS_IN_FLIGHT = 1_000_000
#: The fewest bytes a record takes in a body (``0,``, an error record): until it is
#: decoded, a body of n bytes counts as n / MIN_RECORD_BYTES records, then as its own.
MIN_RECORD_BYTES = 2
#: How often the model file is checked (seconds).
RELOAD_SECONDS = 1.0
#: Scored records the anomaly-rate gauge looks back over, by default.
ANOMALY_RATE_WINDOW = 1000
#: The paths served: anything else is labelled ``other`` in the metrics.
PATHS = ("/score", "/healthz", "/model", "/metrics")


class _RecentRate:
    """The share of anomalies among the last ``window`` records scored.

    Only records that were scored enter (an error record has no verdict, so it is
    not in the denominator). Updated from the event loop only: no lock.
    """

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"anomaly_rate_window must be at least 1, not {window}")
        self._flags = collections.deque(maxlen=window)  # the oldest fall out by themselves

    def add(self, flags) -> None:
        """Push the verdicts (True for an anomaly) of newly scored records, oldest first."""
        self._flags.extend(flags)  # one C-level call per request, not a loop per record

    @property
    def rate(self) -> float:
        """Anomalies over records in the window (0.0 before any record is scored)."""
        return sum(self._flags) / len(self._flags) if self._flags else 0.0


class ServedModel:
    """The scoring being served, reloaded by :meth:`check` when the file's content changes.

    ``check`` runs in the background (see :func:`create_app`); :attr:`scoring` is
    what a request uses, swapped in one assignment.
    """

    def __init__(self, path, top_features=TOP_FEATURES, threshold=None):
        self.path, self.top_features, self.threshold = str(path), top_features, threshold
        self.version = 0
        self.reload_error = None
        self._lock = threading.Lock()
        content = self._read()
        self.scoring, self._digest = self._load(content), hashlib.sha256(content).digest()

    def _read(self) -> bytes:
        """The file's bytes, opened without blocking and only if it is a regular file."""
        descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise OSError(f"{self.path} is not a regular file: not read")
            with os.fdopen(descriptor, "rb", closefd=False) as handle:
                return handle.read()
        finally:
            os.close(descriptor)

    def _load(self, content: bytes) -> Scoring:
        scoring = scoring_for(load(io.BytesIO(content)), threshold=self.threshold,
                              top_features=self.top_features)
        self.version += 1
        return scoring

    def check(self) -> None:
        """Load the file again if its content changed; a failure keeps the running model."""
        with self._lock:
            try:
                content = self._read()
                digest = hashlib.sha256(content).digest()
                if digest != self._digest:
                    self.scoring, self._digest = self._load(content), digest
                self.reload_error = None
            except Exception as exc:  # a half-written, bad or special file: keep serving
                self.reload_error = f"{type(exc).__name__}: {str(exc)[:300]}"


class _InFlight:
    """Records being decoded or scored, against a cap (changed from the pool's threads)."""

    def __init__(self, cap: int):
        self.cap, self.records = cap, 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        """Take ``n`` more, unless that passes the cap (one request alone always may)."""
        with self._lock:
            if self.records and self.records + n > self.cap:
                return False
            self.records += n
            return True

    def resize(self, held: int, now: int) -> int:
        """A request's ``held`` records become ``now``; returns ``now``."""
        with self._lock:
            self.records += now - held
        return now


def create_app(model_path, *, token=None, max_body_bytes=MAX_BODY_BYTES, top_features=TOP_FEATURES,
               explain=True, max_records_in_flight=MAX_RECORDS_IN_FLIGHT,
               reload_seconds=RELOAD_SECONDS, threshold=None,
               anomaly_rate_window=ANOMALY_RATE_WINDOW):
    """The ASGI application serving a model file.

    Parameters
    ----------
    model_path : str or path-like
        A model file with a threshold (or any model file, given ``threshold``).
    token : str, optional
        The bearer token every request but ``/healthz`` must carry.
    max_body_bytes : int
        Largest request body; a larger one is a 413.
    top_features : int
        Features named in an anomaly's explanation.
    explain : bool
        Whether outputs carry explanations.
    max_records_in_flight : int
        Records decoded or scored at once; past it a request is a 429.
    reload_seconds : float
        How often the model file is checked for new content.
    threshold : float, optional
        Served instead of the file's threshold.
    anomaly_rate_window : int
        Scored records the ``streammix_anomaly_rate`` gauge covers (the most recent).

    Returns
    -------
    starlette.applications.Starlette
        The application; ``app.state.served`` is the :class:`ServedModel`.
    """
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ..describe import describe

    served = ServedModel(model_path, top_features, threshold)
    registry = CollectorRegistry()
    requests = Counter("streammix_requests", "HTTP requests", ["path", "status"],
                       registry=registry)
    records = Counter("streammix_records", "Records scored", registry=registry)
    errors = Counter("streammix_record_errors", "Records that could not be scored",
                     registry=registry)
    scored = Counter("streammix_scored_records", "Records scored (error records excluded)",
                     registry=registry)
    anomalies = Counter("streammix_anomalies", "Records flagged as anomalies",
                        registry=registry)
    latency = Histogram("streammix_request_seconds", "Time to answer POST /score",
                        registry=registry)
    version = Gauge("streammix_model_version", "Loads of the model file since start",
                    registry=registry)
    rate = Gauge("streammix_anomaly_rate",
                 f"Share flagged of the last {anomaly_rate_window} records scored "
                 "(error records excluded)", registry=registry)
    # a recent window, not since start: a cumulative rate hides a shift after a long run
    recent = _RecentRate(anomaly_rate_window)
    in_flight = _InFlight(max_records_in_flight)

    def error(status, message, path, headers=None):
        requests.labels(path, str(status)).inc()
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorised(request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def body_of(request) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return None
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > max_body_bytes:
                return None
        return bytes(body)

    def decode_and_score(scoring, body: bytes, ndjson: bool, held: list):
        """(outputs, encoded response body, media type), or a 400's message. ``held``:
        the records this request holds in flight, set to their real number once decoded."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "the body is not UTF-8"
        if ndjson:
            records = split_ndjson(text)
            held[0] = in_flight.resize(held[0], len(records))
            outputs = scoring.score_batch(records, explain=explain)
            return outputs, json_lines(outputs), "application/x-ndjson"
        try:
            document = decode_body(text, MAX_DEPTH)
        except RecordError as exc:
            return f"the body is {str(exc)[:200]}"
        if not isinstance(document, dict | list):
            return "send a JSON object, an array of objects, or NDJSON"
        records = [document] if isinstance(document, dict) else document
        held[0] = in_flight.resize(held[0], len(records))
        outputs = scoring.score_batch(records, explain=explain)
        if isinstance(document, dict):
            return outputs, json_bytes(outputs[0]), "application/json"
        return outputs, json_array(outputs), "application/json"

    async def score(request):
        began = time.perf_counter()
        if not authorised(request):
            return error(401, "a bearer token is needed", "/score")
        try:
            body = await body_of(request)
        except ClientDisconnect:  # nobody to answer
            requests.labels("/score", "disconnected").inc()
            return Response(status_code=400)
        if body is None:
            return error(413, f"the body is larger than {max_body_bytes} bytes", "/score")
        # the most records the body can hold, reserved before decoding
        held = [max(1, (len(body) + 1) // MIN_RECORD_BYTES)]
        if not in_flight.reserve(held[0]):
            return error(429, "too many records in flight; try again shortly", "/score",
                         headers={"Retry-After": "1"})
        try:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            ndjson = kind in ("application/x-ndjson", "application/jsonl", "text/plain")
            # decoding and scoring are CPU work: off the event loop
            result = await run_in_threadpool(decode_and_score, served.scoring, body, ndjson,
                                             held)
        finally:
            in_flight.resize(held[0], 0)
        if isinstance(result, str):
            return error(400, result, "/score")
        outputs, payload, media_type = result
        # an error record has no verdict: it counts in records and errors, not in the rate
        verdicts = [out.get("anomaly") is True for out in outputs if "error" not in out]
        records.inc(len(outputs))
        errors.inc(len(outputs) - len(verdicts))
        scored.inc(len(verdicts))
        anomalies.inc(sum(verdicts))
        recent.add(verdicts)
        rate.set(recent.rate)
        latency.observe(time.perf_counter() - began)
        requests.labels("/score", "200").inc()
        return Response(payload, media_type=media_type)

    async def healthz(request):
        requests.labels("/healthz", "200").inc()
        return JSONResponse({"status": "ok", "model_version": served.version,
                             "reload_error": served.reload_error})

    async def model(request):
        if not authorised(request):
            return error(401, "a bearer token is needed", "/model")
        requests.labels("/model", "200").inc()
        # ASCII JSON: a feature name a file gave may not even be Unicode text
        return Response(json.dumps(describe(served.scoring.model), default=str),
                        media_type="application/json")

    async def metrics(request):
        if not authorised(request):
            return error(401, "a bearer token is needed", "/metrics")
        version.set(served.version)
        requests.labels("/metrics", "200").inc()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def not_found(request, exc):
        # a served path keeps its label (a 405 there is about that path); one label for
        # every other path: a client must not be able to grow the metrics
        path = request.url.path if request.url.path in PATHS else "other"
        # the 405's Allow header (RFC 9110) comes with the exception
        return error(exc.status_code, str(exc.detail), path, headers=exc.headers)

    async def watch_model():
        while True:
            await asyncio.sleep(reload_seconds)
            await run_in_threadpool(served.check)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        watcher = asyncio.create_task(watch_model())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    app = Starlette(routes=[Route("/score", score, methods=["POST"]),
                            Route("/healthz", healthz), Route("/model", model),
                            Route("/metrics", metrics)],
                    exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.state.served = served
    return app
