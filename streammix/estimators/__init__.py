"""The public estimators: they compose the core maths, the readers and the engine."""

from .bayesian_mixture import BayesianGaussianMixture
from .gaussian_mixture import GaussianMixture
from .kmeans import KMeans
from .minibatch import MiniBatchKMeans
from .persistence import load
from .selection import KMeansSelection, Selection, select, select_kmeans

__all__ = ["BayesianGaussianMixture", "GaussianMixture", "KMeans",
           "KMeansSelection", "MiniBatchKMeans", "Selection", "load", "select", "select_kmeans"]


def __getattr__(name):
    # AnomalyScorer moved up a floor, to streammix.scoring (it scores streams)
    if name == "AnomalyScorer":
        import warnings

        warnings.warn("streammix.estimators.AnomalyScorer moved to streammix.AnomalyScorer "
                      "(streammix.scoring.AnomalyScorer)", DeprecationWarning, stacklevel=2)
        from ..scoring import AnomalyScorer

        return AnomalyScorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
