"""The HTTP scoring service: Starlette on Uvicorn, Prometheus metrics.

``POST /score`` takes a JSON object (one output object back), a JSON array
(an array back) or NDJSON (``application/x-ndjson``: NDJSON back), one output
per input record in order, each as ``streammix score MODEL -`` writes it (a
bad record is an error record in its place). ``GET /healthz``, ``GET /model``
(what ``streammix info`` shows) and ``GET /metrics`` (Prometheus text).

Nothing a client sends makes a 500: a body that is not JSON is a 400 with a
JSON error, a body over the limit a 413 (read no further). With a token, every
request needs ``Authorization: Bearer TOKEN`` (compared in constant time), else
401. The model file is watched: when it changes on disk it is loaded again,
checked, and swapped in at once; requests in flight finish on the model they
started with. A file that fails to load leaves the running model in place.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time

from ..estimators.persistence import load
from .configure import scoring_for
from .pipeline import json_array, json_bytes, json_lines
from .records import MAX_DEPTH, RecordError, decode_json, split_ndjson
from .scorer import AnomalyScorer

#: Largest request body, by default.
MAX_BODY_BYTES = 1 << 20


class _Model:
    """The served scorer, reloaded when its file changes (checked at most once a second)."""

    def __init__(self, path, top_features=3):
        self.path, self.top_features = str(path), top_features
        self.version = 0
        self._lock = threading.Lock()
        self._checked = 0.0
        self.scorer, self._stamp = self._load()
        self.reload_error = None

    def _stamp_now(self):
        stat = os.stat(self.path)
        return stat.st_mtime_ns, stat.st_size

    def _load(self):
        stamp = self._stamp_now()
        scorer = scoring_for(load(self.path), top_features=self.top_features)
        self.version += 1
        return scorer, stamp

    def current(self) -> AnomalyScorer:
        """The scorer to use for a request (reloaded first if the file changed)."""
        now = time.monotonic()
        if now - self._checked >= 1.0:
            with self._lock:
                self._checked = now
                try:
                    if self._stamp_now() != self._stamp:
                        self.scorer, self._stamp = self._load()
                        self.reload_error = None
                except Exception as exc:  # a half-written or bad file: keep serving
                    self.reload_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        return self.scorer


def create_app(model_path, *, token=None, max_body_bytes=MAX_BODY_BYTES, top_features=3,
               explain=True):
    """The ASGI application serving ``model_path`` (a model file with a threshold)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ..describe import describe

    served = _Model(model_path, top_features)
    registry = CollectorRegistry()
    requests = Counter("streammix_requests", "HTTP requests", ["path", "status"],
                       registry=registry)
    records = Counter("streammix_records", "Records scored", registry=registry)
    errors = Counter("streammix_record_errors", "Records that could not be scored",
                     registry=registry)
    anomalies = Counter("streammix_anomalies", "Records flagged as anomalies",
                        registry=registry)
    latency = Histogram("streammix_request_seconds", "Time to answer POST /score",
                        registry=registry)
    version = Gauge("streammix_model_version", "Loads of the model file since start",
                    registry=registry)
    rate = Gauge("streammix_anomaly_rate", "Share of the records scored that were flagged",
                 registry=registry)
    totals = {"records": 0, "anomalies": 0}

    def error(status, message, path):
        requests.labels(path, str(status)).inc()
        return JSONResponse({"error": message}, status_code=status)

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

    async def score(request):
        began = time.perf_counter()
        if not authorised(request):
            return error(401, "a bearer token is needed", "/score")
        body = await body_of(request)
        if body is None:
            return error(413, f"the body is larger than {max_body_bytes} bytes", "/score")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return error(400, "the body is not UTF-8", "/score")
        # scoring is CPU work (and a reload is file I/O): off the event loop, so that
        # other requests (health checks, metrics) are answered meanwhile
        scorer = await run_in_threadpool(served.current)
        if kind in ("application/x-ndjson", "application/jsonl", "text/plain"):
            outputs = await run_in_threadpool(scorer.score_batch, split_ndjson(text),
                                              explain=explain)
            response = Response(json_lines(outputs), media_type="application/x-ndjson")
        else:
            try:
                document = decode_json(text, MAX_DEPTH)
            except RecordError as exc:
                return error(400, f"the body is {str(exc)[:200]}", "/score")
            if isinstance(document, dict):
                outputs = await run_in_threadpool(scorer.score_batch, [document],
                                                  explain=explain)
                response = _json_response(json_bytes(outputs[0]))
            elif isinstance(document, list):
                outputs = await run_in_threadpool(scorer.score_batch, document,
                                                  explain=explain)
                response = _json_response(json_array(outputs))
            else:
                return error(400, "send a JSON object, an array of objects, or NDJSON",
                             "/score")
        flagged = sum(bool(out.get("anomaly")) for out in outputs)
        records.inc(len(outputs))
        errors.inc(sum("error" in out for out in outputs))
        anomalies.inc(flagged)
        totals["records"] += len(outputs)
        totals["anomalies"] += flagged
        rate.set(totals["anomalies"] / totals["records"] if totals["records"] else 0.0)
        latency.observe(time.perf_counter() - began)
        requests.labels("/score", "200").inc()
        return response

    async def healthz(request):
        requests.labels("/healthz", "200").inc()
        return JSONResponse({"status": "ok", "model_version": served.version,
                             "reload_error": served.reload_error})

    async def model(request):
        if not authorised(request):
            return error(401, "a bearer token is needed", "/model")
        scorer = await run_in_threadpool(served.current)
        requests.labels("/model", "200").inc()
        # ASCII JSON: a feature name a file gave may not even be Unicode text
        return _json_response(json.dumps(describe(scorer.model), default=str))

    async def metrics(request):
        if not authorised(request):
            return error(401, "a bearer token is needed", "/metrics")
        version.set(served.version)
        requests.labels("/metrics", "200").inc()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def not_found(request, exc):
        # one label for every other path: a client must not be able to grow the metrics
        return error(exc.status_code, str(exc.detail), "other")

    from starlette.exceptions import HTTPException

    return Starlette(routes=[Route("/score", score, methods=["POST"]),
                             Route("/healthz", healthz), Route("/model", model),
                             Route("/metrics", metrics)],
                     exception_handlers={HTTPException: not_found})


def _json_response(text: str | bytes):
    from starlette.responses import Response

    return Response(text, media_type="application/json")
