"""From a fitted model and the user's scoring options to the one :class:`Scoring` that
every transport (stdin, folder, HTTP, Redis) uses: the option rules live here once."""

from __future__ import annotations

from ..core.calibration import check_contamination
from . import adaptive
from .pipeline import TOP_FEATURES, Scoring, require_threshold
from .scorer import AnomalyScorer

#: The fraction flagged when neither the user nor the model file says.
DEFAULT_CONTAMINATION = 0.01


def scoring_for(model, *, threshold=None, contamination=None, top_features=TOP_FEATURES,
                adapt=False,
                drift=None, forgetting_factor=adaptive.FORGETTING_FACTOR,
                window=adaptive.WINDOW, snapshot=None,
                snapshot_every=adaptive.SNAPSHOT_EVERY,
                snapshot_seconds=adaptive.SNAPSHOT_SECONDS) -> Scoring:
    """The scoring of a fitted ``model``: static, or adaptive with ``adapt``.

    ``threshold`` fixes the threshold; otherwise the model's calibrated one is
    used (:class:`~streammix.NotFittedError` when it has none).
    ``contamination`` is the fraction adaptive scoring keeps flagging (default:
    the fraction the model was calibrated at). ``drift`` (default: ``adapt``)
    runs the drift alarm; ``adapt`` with ``drift=False`` adapts without one. A
    snapshot keeps the state of adaptation, so it needs ``adapt``; a fixed threshold
    contradicts adaptation, so it is refused with it. A contamination outside (0, 0.5]
    is a ValueError; a threshold outside the range of scores the model gives its own
    data a :class:`~streammix.ThresholdWarning`.
    """
    if snapshot and not adapt:
        raise ValueError("--snapshot keeps the state of --adapt: give --adapt too")
    if adapt and threshold is not None:
        raise ValueError("--adapt keeps flagging a fraction of the stream, which a fixed "
                         "--threshold does not say: use a model calibrated with "
                         "--contamination (fit or calibrate)")
    if contamination is not None:
        check_contamination(contamination)
    contamination = contamination or getattr(model, "anomaly_contamination_", None) \
        or DEFAULT_CONTAMINATION
    scorer = AnomalyScorer(model, contamination=contamination, threshold=threshold,
                           top_features=top_features)
    require_threshold(scorer)
    if threshold is not None:
        scorer._warn_if_outside(threshold)
    drift = adapt if drift is None else drift
    if not (adapt or drift):
        return scorer
    return scorer.adapt(adapt=adapt, drift=None if drift else False,
                        forgetting_factor=forgetting_factor, window=window, snapshot=snapshot,
                        snapshot_every=snapshot_every, snapshot_seconds=snapshot_seconds)
