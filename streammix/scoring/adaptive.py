"""Adaptive stream scoring: follow a drifting stream without learning its anomalies.

After each micro-batch is scored (with the current model and threshold):

* **the model** takes one ``partial_fit`` step (stepwise EM, or streaming
  variational Bayes for a Bayesian mixture) on the batch's records that were
  *not* flagged — the anomalies it detects never
  teach it (as River's ``QuantileFilter`` protects its model) — with a
  per-record forgetting factor f: a batch of n records has step size
  1 - f**n, so the model's memory is about 1 / (1 - f) records whatever the
  batch sizes;
* **the threshold** becomes the ``contamination`` quantile of the recent
  scores (every record's, flagged or not), from a REQ sketch of Apache
  DataSketches (accurate at low ranks): the scores of the last ``window`` to
  ``2 * window`` records, in two sketches that take turns. After a drift
  alarm the scores seen are forgotten (they belong to the old regime, and
  would drag the threshold down to the shifted records' low scores, letting
  anomalies through): the threshold holds until ``window`` scores of the new
  regime are in;
* **a drift alarm** (Page-Hinkley, for a drop of the scores) runs whether or
  not the model adapts: see :class:`PageHinkley`. When it fires during
  adaptation, a sudden change is under way that small steps would follow
  badly (the shifted records are all flagged, so the model would not learn
  them, and their low scores would drag the threshold down): the scorer keeps
  the model and threshold for the next ``window`` records, gathers them, and
  then refits the model on them (EM from the current parameters, then again
  without the lowest-scoring ``contamination`` of them, so the anomalies
  among them teach nothing) and recalibrates the threshold on them.

Each input record still gets exactly one output record, in order; a drift
alarm adds one event record ``{"event": "drift", ...}`` after the record where
it fired.

**Snapshots.** With ``snapshot=PATH`` the model, the threshold and the state
of the adaptation (sketches, drift test, counts, records gathered after an
alarm) are written to one file every ``snapshot_every`` records or
``snapshot_seconds`` seconds, and at the end: an ``.npz`` written atomically
(temporary file, fsync, rename), never pickle. A scorer started with an
existing snapshot resumes from it (after checking every field, and that it
was made with the same options) and says how many records it had applied.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import time

import numpy as np

from ..core import gaussian as gm
from ..estimators.mixture import BaseMixture
from ..io.atomic import remove_stale_temporaries
from . import pipeline
from .records import MAX_LATENCY_MS, MICRO_BATCH, micro_batches

#: Defaults of the adaptation, documented in docs/user-guide.md.
FORGETTING_FACTOR = 0.999
WINDOW = 5000
#: Page-Hinkley's defaults, in standard deviations of the warm-up scores.
DRIFT_WARMUP, DRIFT_DELTA, DRIFT_THRESHOLD, DRIFT_CLIP = 500, 0.1, 100.0, 5.0


class PageHinkley:
    """Page-Hinkley test for a drop of the mean of a stream of scores.

    The first ``warmup`` scores give a baseline mean mu and deviation sigma;
    each later score x becomes z = clip((x - mu) / sigma, -clip, clip) (a
    far anomaly counts as ``clip`` deviations, not as minus infinity), and
    the test accumulates S_t = sum (m_t - z - delta), with m_t the running
    mean of z: a drop of the scores makes S grow. The alarm fires when S_t -
    min S > ``threshold``; the test then starts afresh (a new baseline from the
    next ``warmup`` scores). Under a stationary stream S drifts down by
    ``delta`` a record, so false alarms need an excursion of ``threshold``
    against that drift; a drop by d deviations fires after about
    ``threshold / (d - delta)`` records.
    """

    def __init__(self, warmup=DRIFT_WARMUP, delta=DRIFT_DELTA, threshold=DRIFT_THRESHOLD,
                 clip=DRIFT_CLIP):
        self.warmup, self.delta, self.threshold, self.clip = warmup, delta, threshold, clip
        self.reset()

    def reset(self):
        self.baseline: list[float] = []
        self.mu = self.sigma = None
        self.count, self.mean, self.total, self.lowest = 0, 0.0, 0.0, 0.0

    def update(self, score: float) -> float | None:
        """Feed one score; the statistic when the alarm fires (then reset), else None."""
        if self.sigma is None:
            if math.isfinite(score):
                self.baseline.append(score)
            if len(self.baseline) >= self.warmup:
                self.mu = float(np.mean(self.baseline))
                self.sigma = float(np.std(self.baseline)) or 1.0
                self.baseline = []
            return None
        z = float(np.clip((score - self.mu) / self.sigma, -self.clip, self.clip)) \
            if not math.isnan(score) else -self.clip
        self.count += 1
        self.mean += (z - self.mean) / self.count
        self.total += self.mean - z - self.delta
        self.lowest = min(self.lowest, self.total)
        statistic = self.total - self.lowest
        if statistic > self.threshold:
            self.reset()
            return statistic
        return None

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("baseline", "mu", "sigma", "count", "mean",
                                              "total", "lowest")}

    def restore(self, state: dict):
        for key, value in state.items():
            setattr(self, key, value)


class ThresholdTracker:
    """The ``q`` quantile of the scores of the last ``window`` to ``2 * window`` records."""

    def __init__(self, q: float, window: int = WINDOW, k: int = 12):
        import datasketches

        self._new = lambda: datasketches.req_floats_sketch(k, False)  # accurate at low ranks
        self._kind = datasketches.req_floats_sketch
        self.q, self.window = q, window
        self.reset()

    def reset(self):
        """Forget the scores seen (after a drift: they were scores of another regime)."""
        self.current, self.previous = self._new(), None

    def update(self, scores: np.ndarray):
        # -inf (a record beyond the model) is the lowest score: the lowest float32 stands in
        low = np.finfo(np.float32).min
        self.current.update(np.clip(np.nan_to_num(scores, nan=low, neginf=low), low, None)
                            .astype(np.float32))
        if self.current.n >= self.window:
            self.previous, self.current = self.current, self._new()

    def threshold(self) -> float | None:
        """The quantile once ``window`` scores were seen, else None (keep the calibrated one)."""
        if self.previous is None:
            return None
        merged = self._kind.deserialize(self.previous.serialize())
        if not self.current.is_empty():
            merged.merge(self.current)
        return float(merged.get_quantile(self.q))

    def state(self) -> dict:
        return {"current": np.frombuffer(self.current.serialize(), np.uint8),
                "previous": None if self.previous is None else
                np.frombuffer(self.previous.serialize(), np.uint8)}

    def restore(self, state: dict):
        self.current = self._kind.deserialize(bytes(state["current"]))
        self.previous = None if state["previous"] is None else \
            self._kind.deserialize(bytes(state["previous"]))


SNAPSHOT_FORMAT = "streammix-adaptive-snapshot"
SNAPSHOT_VERSION = 1
SNAPSHOT_EVERY, SNAPSHOT_SECONDS = 10_000, 60.0


class AdaptiveScoring:
    """An :class:`~streammix.AnomalyScorer` that adapts to its stream (see the module).

    Made by :meth:`AnomalyScorer.adapt`; works on a copy of the scorer and its
    model, so the caller's stay as they were.

    Parameters
    ----------
    scorer : AnomalyScorer
        With a threshold; to adapt, its model a fitted :class:`~streammix.GaussianMixture`
        or :class:`~streammix.BayesianGaussianMixture`.
    adapt : bool, default=True
        Update the model and threshold; False keeps them fixed and only runs
        the drift alarm.
    forgetting_factor : float in (0, 1), default=0.999
        Per record: the model's memory is about 1 / (1 - f) records.
    window : int, default=5000
        The threshold is a quantile of the last ``window`` to ``2 * window`` scores.
    drift : PageHinkley or False, optional
        The drift test (default: :class:`PageHinkley` with its defaults); False:
        none (no drift events, and no refit after an alarm).
    snapshot : str or path, optional
        Where to keep the snapshot (see the module); resumed from when it exists.
    snapshot_every, snapshot_seconds : int, float
        Write the snapshot after this many records, or this many seconds.
    """

    def __init__(self, scorer, *, adapt=True, forgetting_factor=FORGETTING_FACTOR,
                 window=WINDOW, drift=None, snapshot=None, snapshot_every=SNAPSHOT_EVERY,
                 snapshot_seconds=SNAPSHOT_SECONDS):
        model = scorer.model
        if adapt and not isinstance(model, BaseMixture):
            raise TypeError(f"adaptive scoring updates a Gaussian mixture online; a "
                            f"{type(model).__name__} cannot (score it without adapting)")
        if not 0 < forgetting_factor < 1:
            raise ValueError(f"forgetting_factor must be in (0, 1), got {forgetting_factor!r}")
        if adapt and scorer.contamination is None:
            raise ValueError("adaptive scoring keeps flagging the scorer's contamination: "
                             "give it one")
        self.scorer = copy.deepcopy(scorer)
        self.scorer.offset_ = scorer._offset()
        self._started_from = _digest(model)  # a snapshot resumes only the same start
        self.adapt, self.forgetting_factor = adapt, forgetting_factor
        self.tracker = ThresholdTracker(scorer.contamination, window)
        self.drift = None if drift is False else drift if drift is not None else PageHinkley()
        self.records = 0  # records scored
        self.applied = 0  # records that updated the model
        self._relearning = None  # rows gathered since a drift alarm
        self.skipped_updates = 0  # updates the model maths refused (the model was kept)
        self.snapshot_path = None if snapshot is None else str(snapshot)
        self.snapshot_every, self.snapshot_seconds = snapshot_every, snapshot_seconds
        self.resumed = False
        if self.snapshot_path is not None:  # a killed writer's temporary, before it resumes
            remove_stale_temporaries(self.snapshot_path)
        if self.snapshot_path is not None and os.path.exists(self.snapshot_path):
            self._restore(self.snapshot_path)
            self.resumed = True
        self._saved_at = (self.records, time.monotonic())

    @property
    def model(self):
        return self.scorer.model

    def feature_names(self) -> list[str]:
        return self.scorer.feature_names()

    def score_batch(self, records, **options) -> list[dict]:
        """One output per record of an in-memory micro-batch, in order, then the model and
        threshold updates; a drift alarm adds an event record after the record where it
        fired. Writes no snapshot: the caller does, once the outputs are delivered."""
        scored = self.scorer._scored(records, pipeline.RecordOptions.of(options))
        events = self._after_batch(scored.outputs, scored.rows, scored.positions)
        outputs = scored.outputs
        if events:
            outputs = []
            for position, out in enumerate(scored.outputs):
                outputs.append(out)
                outputs.extend(events.get(position, []))
        return outputs

    def score_batches(self, records, *, batch_size=MICRO_BATCH,
                      max_latency_ms=MAX_LATENCY_MS, **options):
        """:meth:`score_batch` over the micro-batches of a stream (see
        :meth:`AnomalyScorer.score_batches`). The snapshot is written when due, after
        the batch is handed on, and at the end: also when the reader stops early, or
        on Ctrl-C / SIGTERM (SystemExit)."""
        pipeline.RecordOptions.of(options)  # bad options fail before any record is read
        self.scorer._offset()
        try:
            for batch in micro_batches(records, batch_size, max_latency_ms / 1000.0):
                yield self.score_batch(batch, **options)
                self._snapshot_if_due()
        finally:
            self.close()

    def close(self):
        """A clean stop: the snapshot (if any) is written."""
        if self.snapshot_path is not None:
            self.save_snapshot(self.snapshot_path)

    def _snapshot_if_due(self):
        if self.snapshot_path is None:
            return
        records, when = self._saved_at
        if self.records - records >= self.snapshot_every or \
                time.monotonic() - when >= self.snapshot_seconds:
            self.save_snapshot(self.snapshot_path)

    # -- snapshots ------------------------------------------------------------
    def _options(self) -> dict:
        return {"adapt": self.adapt, "forgetting_factor": self.forgetting_factor,
                "window": self.tracker.window, "contamination": self.tracker.q,
                "drift": None if self.drift is None else [
                    self.drift.warmup, self.drift.delta, self.drift.threshold, self.drift.clip],
                "model": self._started_from}

    def save_snapshot(self, path):
        """Write the model, threshold and adaptation state to ``path`` atomically."""
        from ..estimators.persistence import model_file_arrays
        from ..io.npz import write_npz

        model = self.model
        model.anomaly_threshold_ = self.scorer._offset()
        model.anomaly_contamination_ = self.tracker.q
        buffer = io.BytesIO()
        np.savez(buffer, **model_file_arrays(model))
        tracker = self.tracker.state()
        state = {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
                 "options": self._options(), "records": self.records, "applied": self.applied,
                 "drift": None if self.drift is None else self.drift.state(),
                 "has_previous": tracker["previous"] is not None,
                 "relearning": self._relearning is not None}
        arrays = {"model": np.frombuffer(buffer.getvalue(), np.uint8),
                  "state": np.frombuffer(json.dumps(state).encode(), np.uint8),
                  "tracker_current": tracker["current"]}
        if tracker["previous"] is not None:
            arrays["tracker_previous"] = tracker["previous"]
        if self._relearning is not None:
            gathered = [r for r in self._relearning if len(r)]
            arrays["relearning"] = np.concatenate(gathered) if gathered else \
                np.empty((0, model.n_features_in_))
        write_npz(path, arrays)
        self._saved_at = (self.records, time.monotonic())

    def _restore(self, path):
        """The state of a snapshot, every field checked (a SnapshotError otherwise)."""
        from ..estimators.persistence import load
        from ..exceptions import ModelFileError, SnapshotError
        from ..io.npz import NpzError, NpzReader, json_bytes

        try:
            with NpzReader(path) as npz:
                state = json.loads(json_bytes(npz.read("state")).decode("utf-8"))
                if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
                    raise ValueError("not a streammix adaptive-scoring snapshot")
                if state.get("version") != SNAPSHOT_VERSION:
                    raise ValueError(f"snapshot version {state.get('version')!r}; this "
                                     f"streammix reads {SNAPSHOT_VERSION}")
                if state.get("options") != json.loads(json.dumps(self._options())):
                    raise SnapshotError(
                        f"{path}: it was made with other options ({state.get('options')}); "
                        "restart with the same ones, or remove the snapshot to start afresh")
                model = load(io.BytesIO(npz.read("model").tobytes()))
                current = npz.read("tracker_current")
                previous = npz.read("tracker_previous") if state["has_previous"] else None
                relearning = npz.read("relearning") if state["relearning"] else None
            records, applied = state["records"], state["applied"]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in (records, applied)):
                raise ValueError("its record counts are not counts")
            same = ("n_components", "covariance_type", "n_features_in_")
            if type(model) is not type(self.model) or any(
                    getattr(model, name) != getattr(self.model, name) for name in same):
                raise ValueError("its model is not the scorer's model")
            threshold = getattr(model, "anomaly_threshold_", None)
            if threshold is None:
                raise ValueError("its model has no threshold")
            if relearning is not None and (relearning.ndim != 2 or
                                           relearning.shape[1] != model.n_features_in_):
                raise ValueError("its gathered records have the wrong shape")
            if self.drift is not None:  # the options matched: both have one, or neither
                self.drift.restore(_checked_drift(state["drift"]))
            self.tracker.restore({"current": current, "previous": previous})
        except SnapshotError:
            raise
        except ModelFileError as exc:
            raise SnapshotError(f"{path}: its model is damaged ({exc})") from None
        except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError,
                RecursionError, NpzError) as exc:  # datasketches: IndexError, RuntimeError
            raise SnapshotError(f"{path}: not a usable snapshot ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); remove it to start afresh") from None
        # where and how to compute come from this run, never from the file
        runtime = ("scheduler", "n_workers", "verbose", "storage_options", "chunk_size")
        model.set_params(**{name: getattr(self.model, name) for name in runtime})
        self.scorer.model = model
        self.scorer.offset_ = float(threshold)
        self.records, self.applied = records, applied
        self._relearning = None if relearning is None else [relearning]

    def score_records(self, records, **options):
        """One output per record, in order (and the drift events), adapting as it goes."""
        for batch in self.score_batches(records, **options):
            yield from batch

    def _after_batch(self, outputs, rows, positions) -> dict:
        """Drift test, then threshold and model updates; the drift events by position."""
        events = {}
        scores = np.array([outputs[p]["score"] for p in positions], dtype=np.float64)
        fired_at = None
        for index, (position, score) in enumerate(zip(positions, scores, strict=True)):
            self.records += 1
            statistic = None if self.drift is None else self.drift.update(score)
            if statistic is not None:
                fired_at = index if fired_at is None else fired_at
                events.setdefault(position, []).append({
                    "event": "drift", "after_id": outputs[position]["id"],
                    "record": self.records, "statistic": round(statistic, 3)})
        if self.adapt and len(rows):
            for out in outputs:  # the threshold each record was judged by
                if "score" in out:
                    out["threshold"] = self.scorer._offset()
            if fired_at is not None and self._relearning is None:
                self._relearning = [rows[fired_at + 1:]]  # the new regime starts here
            elif self._relearning is not None:
                self._relearning.append(rows)
                if sum(len(r) for r in self._relearning) >= self.tracker.window:
                    gathered, self._relearning = np.concatenate(self._relearning), None
                    self._safely(self._relearn, gathered)
            else:
                self._follow(rows, scores, [not outputs[p]["anomaly"] for p in positions])
        return events

    def _follow(self, rows, scores, normal):
        """Small changes: the threshold tracks the recent scores, the model learns the
        records it did not flag."""
        self.tracker.update(scores)
        normal = np.asarray(normal)
        if normal.any():
            self._safely(self._step, rows[normal])
        threshold = self.tracker.threshold()
        if threshold is not None:
            self.scorer.offset_ = threshold

    def _safely(self, update, rows):
        """A model update that cannot stop the stream: if the maths refuses these rows
        (a component collapsing on degenerate data, say), the model stays as it was and
        ``skipped_updates`` counts it; scoring goes on."""
        from ..exceptions import StreammixError

        try:
            update(rows)
        except (StreammixError, ValueError, ArithmeticError, np.linalg.LinAlgError):
            self.skipped_updates += 1

    def _relearn(self, rows):
        """After a drift alarm: the model refitted on the ``window`` records that followed
        it (from the current parameters, then once more without the lowest-scoring
        ``contamination`` of them, so the anomalies among them teach nothing), and the
        threshold recalibrated on them."""
        model, q = self.model, self.tracker.q
        fitted = _refit(model, rows)
        scores = fitted.score_samples(rows)
        kept = rows[scores >= np.quantile(scores, q)]
        fitted = _refit(fitted, kept)
        scores = fitted.score_samples(rows)
        fitted.set_params(warm_start=model.warm_start, max_iter=model.max_iter,
                          verbose=model.verbose, checkpoint=model.checkpoint,
                          scheduler=model.scheduler)
        fitted.n_steps_ = getattr(model, "n_steps_", 0)
        self.scorer.model = fitted
        self.scorer.offset_ = float(np.quantile(scores, q))
        self.tracker.reset()
        self.tracker.update(scores)
        self.applied += len(kept)

    def _step(self, rows):
        """One online update of the model on ``rows`` (flagged records excluded): its
        ``partial_fit`` step, with this scorer's per-record forgetting factor."""
        model = self.model
        model.forgetting_factor = self.forgetting_factor  # the scorer's own copy
        params = model._gaussian()
        model._online_update(params, gm.estep_stats(params, rows))
        self.applied += len(rows)


def _digest(model) -> str:
    """SHA-256 of a model's file entries: which model a snapshot started from."""
    import hashlib

    from ..estimators.persistence import model_file_arrays

    digest = hashlib.sha256()
    for name, array in sorted(model_file_arrays(model).items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _checked_drift(state) -> dict:
    """The drift test's saved state, each field of its type (ValueError otherwise)."""
    numbers = ("count", "mean", "total", "lowest")
    if not isinstance(state, dict) or set(state) != {"baseline", "mu", "sigma", *numbers}:
        raise ValueError("its drift-test state is not one")
    finite = all(isinstance(state[k], int | float) and math.isfinite(state[k]) for k in numbers)
    baseline = state["baseline"]
    if not finite or not isinstance(baseline, list) or not all(
            isinstance(v, int | float) and math.isfinite(v) for v in baseline) or any(
            state[k] is not None and not (isinstance(state[k], int | float)
                                          and math.isfinite(state[k])) for k in ("mu", "sigma")):
        raise ValueError("its drift-test state holds values that are not finite numbers")
    return state


def _refit(model: BaseMixture, rows: np.ndarray) -> BaseMixture:
    """A copy of ``model`` refitted on ``rows`` (a window of records, in memory) from its
    current parameters (a warm start)."""
    import warnings

    from ..exceptions import ConvergenceWarning

    refit = copy.deepcopy(model).set_params(warm_start=True, max_iter=200, verbose=0,
                                            checkpoint=None, scheduler="synchronous")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return refit.fit(rows)
