"""Adaptive stream scoring: follow a drifting stream without learning its anomalies.

Records are scored one fixed-size **block** (``block`` records, 256 by default)
at a time, counted from the stream's first scored record, whatever the
transport's micro-batches: each record is judged by the model and threshold
as they were at the end of the previous block, and the adaptation runs at
each block's end. A stream scored in one run, or in several runs resumed from
snapshots (which keep the unfinished block), gives the same outputs line for
line.

At each block's end:

* **the model** takes one ``partial_fit`` step (stepwise EM, or streaming
  variational Bayes for a Bayesian mixture) on the block's records, each
  weighted by how typical it is under the **anchor** (the calibrated model):
  weight 1 at or above the anchor's threshold, falling linearly to 0 at its
  floor, the quantile of its own scores ten times further into the tail. A
  record far beyond what the calibrated model calls normal teaches nothing,
  a borderline one little; the model is not taught by the current model's
  own flags (a model that narrowed would flag more, learn narrower and
  spiral). The forgetting factor f is per unit of weight: the model
  remembers about 1 / (1 - f) typical records. What the slow path can
  follow is therefore bounded by the anchor: drift within the region the
  calibrated model calls normal, not a creep beyond it, however slow.
* **degenerate blocks are refused**: a block whose weighted spread is 16
  times narrower (in variance, on average per axis) than the narrowest
  component (a run of identical records, a stuck feature), and any step that
  would shrink a component's covariance to less than a quarter of the
  anchor's (in geometric-mean variance) or make it singular. Refusals are
  counted (``refused_updates``) and reported; scoring goes on.
* **the threshold** is a quantile of the *model's own* score distribution
  (20,000 seeded draws from the model, the same draws each time), at the
  level the calibrated threshold has under the calibrated model, re-evaluated
  every ``window`` records and moving at most a quarter of the anchor's
  median-to-threshold gap per window. It follows the model, which only
  typical records teach, so anomalies cannot drag it, whatever their share
  of the stream: above ``contamination`` they are all flagged.
* **a drift alarm** (Page-Hinkley, for a drop of the scores) runs whether or
  not the model adapts: see :class:`PageHinkley`. During adaptation an alarm
  holds the model and threshold for the next ``window`` records and gathers
  them. If more than half of them were flagged, the stream has changed
  regime: the model is refitted on them (EM from the current parameters,
  then again without those beyond the first fit's floor), the
  threshold is set at the calibrated level of the new model's own scores, and
  the new model becomes the anchor. Otherwise the alarm was a burst of
  anomalies, not a new regime: nothing is learnt from it
  (``refused_relearns``). A change followed by fewer than half of the records
  (slow poisoning by a minority of the traffic) is never relearnt.

Each input record still gets exactly one output record, in order; a drift
alarm adds one event record ``{"event": "drift", ...}`` after the record where
it fired.

**Snapshots.** With ``snapshot=PATH`` the model, the anchor, the threshold
and the state of the adaptation (the unfinished block, drift test, counts,
records gathered after an alarm) are written to one file every
``snapshot_every`` records or ``snapshot_seconds`` seconds, and at the end:
an ``.npz`` written atomically (temporary file, fsync, rename), never pickle.
A scorer started with an existing snapshot resumes from it (after checking
every field, and that it was made with the same options) and says how many
records it had applied.
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
from ..core.calibration import check_contamination, widened
from ..estimators.mixture import BaseMixture
from ..io.atomic import remove_stale_temporaries
from . import pipeline
from .records import MAX_LATENCY_MS, MICRO_BATCH, ParsedBatch, micro_batches, parse_batch

#: Defaults of the adaptation, documented in docs/user-guide.md.
FORGETTING_FACTOR = 0.999
WINDOW = 5000
BLOCK = 256
#: Page-Hinkley's defaults, in standard deviations of the warm-up scores.
DRIFT_WARMUP, DRIFT_DELTA, DRIFT_THRESHOLD, DRIFT_CLIP = 500, 0.1, 100.0, 5.0
#: The model's own scores: how many draws, and their seed (the same draws every time).
OWN_DRAWS, OWN_SEED = 20_000, 20_251_204
#: The anchor's floor: its own scores' quantile at this share of its threshold's level.
LENIENT = 0.1
#: A window moves the threshold at most this share of the anchor's median-to-threshold gap.
MAX_STEP = 0.25
#: After an alarm, relearn only when more than this share of the gathered records was flagged.
RELEARN_MAJORITY = 0.5
#: Refused: a block this much narrower than the narrowest component (variance ratio per axis,
#: geometric mean), or a step shrinking a component below this share of the anchor's.
NARROW_BLOCK, SHRUNK_COMPONENT = 1 / 16, 1 / 4


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


SNAPSHOT_FORMAT = "streammix-adaptive-snapshot"
SNAPSHOT_VERSION = 2
SNAPSHOT_EVERY, SNAPSHOT_SECONDS = 10_000, 60.0


class Anchor:
    """The calibrated model that adaptation stays tied to: its parameters, threshold,
    the median of its own scores, and the level its threshold has among them."""

    def __init__(self, model, threshold: float):
        self.model = copy.deepcopy(model)
        self.params = self.model._gaussian()
        self.threshold = float(threshold)
        own = own_scores(self.model)
        self.level = float(np.clip(np.mean(own < self.threshold), 1 / len(own), 0.5))
        self.median = float(np.median(own))
        self.own_at_level = float(np.quantile(own, self.level))
        # records scoring below this, far in the anchor's own tail, teach nothing
        self.floor = float(np.quantile(own, self.level * LENIENT))
        # the gap the threshold's steps are measured in (never zero)
        self.gap = max(self.median - self.threshold, 1e-9 * max(1.0, abs(self.median)))

    def weights(self, rows: np.ndarray) -> np.ndarray:
        """How much each row may teach: 1 at the anchor's threshold or above, 0 at its
        floor (``LENIENT`` times further into its own tail) or below, linear between."""
        scores = gm.log_prob_resp(self.params, rows)[0]
        span = max(self.threshold - self.floor, 1e-12)
        return np.clip((scores - self.floor) / span, 0.0, 1.0)


def own_scores(model) -> np.ndarray:
    """The scores of ``OWN_DRAWS`` seeded draws from ``model`` (the same draws for the
    same parameters: the threshold moves only when the model does)."""
    params = model._gaussian()
    draws, _ = gm.sample(params, np.asarray(model.covariances_, dtype=np.float64), OWN_DRAWS,
                         np.random.default_rng(OWN_SEED))
    return gm.log_prob_resp(params, draws)[0]


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
        Per typical record: the model's memory is about 1 / (1 - f) records.
    window : int, default=5000
        Records between two re-evaluations of the threshold, and gathered after
        a drift alarm.
    block : int, default=256
        Records scored with the same model and threshold; the adaptation runs at
        each block's end (blocks count scored records from the stream's start).
    drift : PageHinkley or False, optional
        The drift test (default: :class:`PageHinkley` with its defaults); False:
        none (no drift events, and no refit after an alarm).
    snapshot : str or path, optional
        Where to keep the snapshot (see the module); resumed from when it exists.
    snapshot_every, snapshot_seconds : int, float
        Write the snapshot after this many records, or this many seconds.

    Attributes
    ----------
    records, applied : int
        Records scored, and records that taught the model (any weight).
    refused_updates, relearns, refused_relearns : int
        Degenerate block updates refused; drift alarms relearnt, and refused as
        bursts of anomalies.
    """

    def __init__(self, scorer, *, adapt=True, forgetting_factor=FORGETTING_FACTOR,
                 window=WINDOW, block=BLOCK, drift=None, snapshot=None,
                 snapshot_every=SNAPSHOT_EVERY, snapshot_seconds=SNAPSHOT_SECONDS):
        model = scorer.model_
        if adapt and not isinstance(model, BaseMixture):
            raise TypeError(f"adaptive scoring updates a Gaussian mixture online; a "
                            f"{type(model).__name__} cannot (score it without adapting)")
        if not 0 < forgetting_factor < 1:
            raise ValueError(f"forgetting_factor must be in (0, 1), got {forgetting_factor!r}")
        if not (isinstance(block, int) and block >= 1 and isinstance(window, int)
                and window >= block):
            raise ValueError(f"block must be a positive integer and window an integer of at "
                             f"least block, got block={block!r}, window={window!r}")
        if adapt and scorer.contamination is None:
            raise ValueError("adaptive scoring keeps flagging the scorer's contamination: "
                             "give it one")
        if adapt:
            check_contamination(scorer.contamination)
        self.scorer = copy.deepcopy(scorer)
        self.scorer.offset_ = scorer._offset()
        self._started_from = _digest(model)  # a snapshot resumes only the same start
        self.adapt, self.forgetting_factor = adapt, forgetting_factor
        self.contamination = scorer.contamination
        self.window, self.block = window, block
        self.drift = None if drift is False else drift if drift is not None else PageHinkley()
        self.anchor = Anchor(model, self.scorer.offset_) if adapt else None
        self.records = 0  # records scored
        self.applied = 0  # records that taught the model
        self.refused_updates = self.relearns = self.refused_relearns = 0
        n_features = len(self.scorer.feature_names())
        self._rows = np.empty((0, n_features))  # the unfinished block
        self._flags = np.empty(0, dtype=bool)
        self._gather_from = None  # where the records gathered after an alarm start
        self._gathered = None  # (rows, flags) gathered since an alarm
        self._since_threshold = 0  # records since the threshold was last re-evaluated
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
        return self.scorer.model_

    @property
    def skipped_updates(self) -> int:
        """The old name of :attr:`refused_updates`."""
        return self.refused_updates

    def feature_names(self) -> list[str]:
        return self.scorer.feature_names()

    def score_batch(self, records, **options) -> list[dict]:
        """One output per record of an in-memory micro-batch, in order, each judged by the
        model and threshold of its block; a drift alarm adds an event record after the
        record where it fired. Writes no snapshot: the caller does, once the outputs are
        delivered."""
        record_options = pipeline.RecordOptions.of(options)
        names = self.feature_names()
        fields = list(record_options.fields) if record_options.fields is not None else names
        parsed = parse_batch(records, fields, record_options.id_field,
                             max_bytes=record_options.max_record_bytes,
                             max_depth=record_options.max_depth)
        outputs: list = [None] * len(parsed)
        for position, message in parsed.errors.items():
            outputs[position] = {"id": parsed.ids[position], "error": message}
        events: dict = {}
        done = 0
        while done < len(parsed.positions):  # the part of the batch in one block
            offset = self.records % self.block
            take = min(len(parsed.positions) - done, self.block - offset)
            positions = parsed.positions[done:done + take]
            rows = parsed.rows[done:done + take]
            # scored at its place in a whole block of rows: BLAS rounds a row the same way
            # only in the same shape and place, so the outputs cannot depend on how the
            # stream was cut into micro-batches
            padded = np.zeros((self.block, rows.shape[1]))
            padded[offset:offset + take] = rows
            ids = [None] * self.block
            ids[offset:offset + take] = [parsed.ids[p] for p in positions]
            part = ParsedBatch(ids, padded, list(range(self.block)), {})
            scored = self.scorer._scored(part, record_options).outputs[offset:offset + take]
            for position, out in zip(positions, scored, strict=True):
                outputs[position] = out
            self._take(rows, scored, positions, events)
            done += take
        if not events:
            return outputs
        merged = []
        for position, out in enumerate(outputs):
            merged.append(out)
            merged.extend(events.get(position, []))
        return merged

    def _take(self, rows, outputs, positions, events):
        """Scored records into the block: the drift test, record by record; the block's
        end runs the adaptation."""
        threshold = self.scorer._offset()
        for index, (position, out) in enumerate(zip(positions, outputs, strict=True)):
            self.records += 1
            if self.adapt:
                out["threshold"] = threshold  # the threshold the record was judged by
            statistic = None if self.drift is None else self.drift.update(out["score"])
            if statistic is not None:
                events.setdefault(position, []).append({
                    "event": "drift", "after_id": out["id"], "record": self.records,
                    "statistic": round(statistic, 3)})
                if self.adapt and self._gathered is None and self._gather_from is None:
                    self._gather_from = len(self._rows) + index + 1  # the new regime's start
        if not self.adapt:
            return
        self._rows = np.concatenate([self._rows, rows])
        self._flags = np.concatenate([self._flags, [bool(o["anomaly"]) for o in outputs]])
        if len(self._rows) == self.block:
            rows, flags, start = self._rows, self._flags, self._gather_from
            self._rows, self._flags = rows[:0], flags[:0]
            self._gather_from = None
            self._end_block(rows, flags, start)

    def _end_block(self, rows, flags, gather_from):
        if gather_from is not None:
            self._gathered = (rows[gather_from:], flags[gather_from:])
        elif self._gathered is not None:
            self._gathered = (np.concatenate([self._gathered[0], rows]),
                              np.concatenate([self._gathered[1], flags]))
        else:
            self._follow(rows, flags)
            return
        if len(self._gathered[0]) >= self.window:
            gathered, self._gathered = self._gathered, None
            self._after_alarm(*gathered)

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

    def score_records(self, records, **options):
        """One output per record, in order (and the drift events), adapting as it goes."""
        for batch in self.score_batches(records, **options):
            yield from batch

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

    # -- adaptation -----------------------------------------------------------
    def _follow(self, rows, flags):
        """Small changes: one weighted step on the block (see the module), then, once a
        window has passed, the threshold."""
        weights = self.anchor.weights(rows)
        taught = weights > 0
        candidate = None
        if taught.any():
            candidate = self._step(rows[taught], weights[taught])
        if candidate is None:
            self.refused_updates += bool(taught.any())
        else:
            self.scorer.model_ = candidate
            self.applied += int(taught.sum())
        self._since_threshold += len(rows)
        if self._since_threshold >= self.window:
            self._since_threshold = 0
            moved = self.anchor.threshold + float(
                np.quantile(own_scores(self.model), self.anchor.level)) - self.anchor.own_at_level
            step = MAX_STEP * self.anchor.gap
            offset = self.scorer._offset()
            self.scorer.offset_ = float(np.clip(moved, offset - step, offset + step))

    def _step(self, rows, weights):
        """The model after one weighted online step on ``rows``, or None when the block or
        the step is degenerate (see the module), or the maths refuses it."""
        from ..exceptions import StreammixError

        params = self.model._gaussian()
        n_features = rows.shape[1]
        if _narrower(rows, weights, params, NARROW_BLOCK):
            return None
        candidate = copy.deepcopy(self.model)
        candidate.forgetting_factor = self.forgetting_factor  # the scorer's own copy
        try:
            stepped = candidate._online_update(params, gm.estep_stats(params, rows, weights))
        except (StreammixError, ValueError, ArithmeticError, np.linalg.LinAlgError):
            return None
        # log_det is -1/2 log|covariance|: a component shrunk to a quarter of the anchor's
        # geometric-mean variance has grown it by d/2 log 4
        limit = self.anchor.params.log_det + 0.5 * n_features * math.log(1 / SHRUNK_COMPONENT)
        real = self.anchor.params.weights >= 0.01
        if not (np.all(np.isfinite(stepped.log_det)) and np.all(np.isfinite(stepped.means))
                and np.all((stepped.log_det <= limit) | ~real)):
            return None
        return candidate

    def _after_alarm(self, rows, flags):
        """The ``window`` records after a drift alarm: a new regime when most were flagged
        (relearnt, and the new model becomes the anchor), else a burst of anomalies
        (nothing learnt)."""
        if flags.mean() <= RELEARN_MAJORITY:
            self.refused_relearns += 1
            return
        from ..exceptions import StreammixError

        try:
            level = self.anchor.level
            fitted = _refit(self.model, rows)
            # without what the first fit places far in its own tail: the anomalies
            floor = np.quantile(own_scores(fitted), level * LENIENT)
            kept = rows[fitted.score_samples(rows) >= floor]
            fitted = _refit(fitted, kept)
            threshold = float(np.quantile(own_scores(fitted), level))
        except (StreammixError, ValueError, ArithmeticError, np.linalg.LinAlgError):
            self.refused_relearns += 1
            return
        model = self.model
        fitted.set_params(warm_start=model.warm_start, max_iter=model.max_iter,
                          verbose=model.verbose, checkpoint=model.checkpoint,
                          scheduler=model.scheduler)
        fitted.n_steps_ = getattr(model, "n_steps_", 0)
        self.scorer.model_ = fitted
        self.scorer.offset_ = threshold
        self.anchor = Anchor(fitted, threshold)
        self._since_threshold = 0
        self.relearns += 1
        self.applied += len(kept)

    # -- snapshots ------------------------------------------------------------
    def _options(self) -> dict:
        return {"adapt": self.adapt, "forgetting_factor": self.forgetting_factor,
                "window": self.window, "block": self.block,
                "contamination": self.contamination,
                "drift": None if self.drift is None else [
                    self.drift.warmup, self.drift.delta, self.drift.threshold, self.drift.clip],
                "model": self._started_from}

    def save_snapshot(self, path):
        """Write the model, anchor, threshold and adaptation state to ``path`` atomically."""
        from ..io.npz import write_npz

        state = {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
                 "options": self._options(), "records": self.records, "applied": self.applied,
                 "refused_updates": self.refused_updates, "relearns": self.relearns,
                 "refused_relearns": self.refused_relearns,
                 "since_threshold": self._since_threshold, "gather_from": self._gather_from,
                 "threshold": self.scorer._offset(),
                 "anchor_threshold": None if self.anchor is None else self.anchor.threshold,
                 "drift": None if self.drift is None else self.drift.state(),
                 "gathering": self._gathered is not None}
        arrays = {"model": _model_bytes(self.model, self.scorer._offset(), self.contamination),
                  "state": np.frombuffer(json.dumps(state).encode(), np.uint8),
                  "block_rows": self._rows, "block_flags": self._flags}
        if self.anchor is not None:
            arrays["anchor"] = _model_bytes(self.anchor.model, self.anchor.threshold,
                                            self.contamination)
        if self._gathered is not None:
            arrays["gathered_rows"], arrays["gathered_flags"] = self._gathered
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
                anchor = load(io.BytesIO(npz.read("anchor").tobytes())) if self.adapt \
                    else None
                rows, flags = npz.read("block_rows"), npz.read("block_flags")
                gathered = (npz.read("gathered_rows"), npz.read("gathered_flags")) \
                    if state["gathering"] is True else None
            counts = ("records", "applied", "refused_updates", "relearns", "refused_relearns",
                      "since_threshold")
            if not all(isinstance(state[k], int) and not isinstance(state[k], bool)
                       and state[k] >= 0 for k in counts):
                raise ValueError("its record counts are not counts")
            for other in (model, anchor):
                if other is not None and not _same_shape(other, self.model):
                    raise ValueError("its model is not the scorer's model")
            threshold = _finite(state["threshold"], "threshold")
            n_features = self.model.n_features_in_
            _check_block(rows, flags, n_features, self.block - 1, "unfinished block")
            if self.adapt and len(rows) != state["records"] % self.block:
                # blocks are cut at multiples of the record count: a block that cannot end
                # would stop the learning for good
                raise ValueError(f"its unfinished block holds {len(rows)} records, not the "
                                 f"{state['records'] % self.block} its record count implies")
            if gathered is not None:
                _check_block(*gathered, n_features, None, "gathered records")
            gather_from = state["gather_from"]
            if gather_from is not None and not (
                    isinstance(gather_from, int) and 0 <= gather_from <= len(rows)):
                raise ValueError("its alarm position is not in its block")
            if self.drift is not None:  # the options matched: both have one, or neither
                self.drift.restore(_checked_drift(state["drift"]))
            if anchor is not None:
                anchor = Anchor(anchor, _finite(state["anchor_threshold"], "anchor threshold"))
        except SnapshotError:
            raise
        except ModelFileError as exc:
            raise SnapshotError(f"{path}: its model is damaged ({exc})") from None
        except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError,
                RecursionError, NpzError) as exc:
            raise SnapshotError(f"{path}: not a usable snapshot ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); remove it to start afresh") from None
        # where and how to compute come from this run, never from the file
        runtime = ("scheduler", "n_workers", "verbose", "storage_options", "chunk_size")
        model.set_params(**{name: getattr(self.model, name) for name in runtime})
        self.scorer.model_ = model
        self.scorer.offset_ = threshold
        self.anchor = anchor
        for name in counts[:-1]:
            setattr(self, name, state[name])
        self._since_threshold = state["since_threshold"]
        self._rows, self._flags = rows.astype(np.float64), flags.astype(bool)
        self._gather_from, self._gathered = gather_from, gathered


def _narrower(rows, weights, params, ratio) -> bool:
    """Whether the weighted spread of ``rows`` is degenerate: fewer effective rows than
    features plus one, or a covariance whose determinant is below ``ratio`` ** d times
    the narrowest component's."""
    n_features = rows.shape[1]
    if weights.sum() ** 2 < (n_features + 1) * (weights ** 2).sum():
        return True
    mean = weights @ rows / weights.sum()
    centred = rows - mean
    spread = (centred * weights[:, None]).T @ centred / weights.sum()
    sign, log_det = np.linalg.slogdet(spread)
    narrowest = -2.0 * float(np.max(params.log_det))  # log|covariance| of the narrowest
    return bool(sign <= 0 or log_det < narrowest + n_features * math.log(ratio))


def _model_bytes(model, threshold, contamination) -> np.ndarray:
    """A model as the bytes of its model file (with the threshold it goes with, and the
    range of the model's own scores widened to hold it: a threshold that lags a model
    that moved is still the adaptation's own, and the snapshot must load)."""
    from ..estimators.persistence import model_file_arrays

    model = copy.copy(model)
    model.anomaly_threshold_, model.anomaly_contamination_ = float(threshold), contamination
    model.anomaly_score_range_ = list(widened(model._score_range(), float(threshold)))
    buffer = io.BytesIO()
    np.savez(buffer, **model_file_arrays(model))
    return np.frombuffer(buffer.getvalue(), np.uint8)


def _same_shape(model, other) -> bool:
    same = ("n_components", "covariance_type", "n_features_in_")
    return type(model) is type(other) and all(
        getattr(model, name) == getattr(other, name) for name in same)


def _finite(value, name) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value):
        raise ValueError(f"its {name} is not a finite number")
    return float(value)


def _check_block(rows, flags, n_features, most, name):
    if rows.ndim != 2 or rows.shape[1] != n_features or flags.shape != (len(rows),) or \
            (most is not None and len(rows) > most) or not np.isfinite(rows).all() or \
            flags.dtype != bool:
        raise ValueError(f"its {name} has the wrong shape or values")


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
