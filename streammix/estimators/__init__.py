"""The public estimators: they compose the core maths, the readers and the engine."""

from .anomaly import AnomalyScorer
from .bayesian_mixture import BayesianGaussianMixture
from .gaussian_mixture import GaussianMixture
from .kmeans import KMeans
from .minibatch import MiniBatchKMeans
from .persistence import load
from .selection import KMeansSelection, Selection, select, select_kmeans

__all__ = ["AnomalyScorer", "BayesianGaussianMixture", "GaussianMixture", "KMeans",
           "KMeansSelection", "MiniBatchKMeans", "Selection", "load", "select", "select_kmeans"]
