"""The public estimators: they compose the core maths, the readers and the engine."""

from .gaussian_mixture import GaussianMixture
from .persistence import load

__all__ = ["GaussianMixture", "load"]
