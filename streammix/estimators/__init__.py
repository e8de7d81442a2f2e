"""The public estimators: they compose the core maths, the readers and the engine."""

from .gaussian_mixture import GaussianMixture
from .kmeans import KMeans
from .minibatch import MiniBatchKMeans
from .persistence import load
from .selection import Selection, select

__all__ = ["GaussianMixture", "KMeans", "MiniBatchKMeans", "Selection", "load", "select"]
