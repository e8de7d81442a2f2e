"""streammix: cluster data larger than memory, and score streams for anomalies.

>>> import streammix as sm
>>> model = sm.GaussianMixture(n_components=3)  # doctest: +SKIP
>>> model.fit("data/*.parquet")  # doctest: +SKIP
"""

from .estimators import (
    BayesianGaussianMixture,
    GaussianMixture,
    KMeans,
    KMeansSelection,
    MiniBatchKMeans,
    Selection,
    load,
    select,
    select_kmeans,
)
from .exceptions import (
    CollapsedComponentError,
    ConvergenceWarning,
    DataError,
    ModelFileError,
    ModelFileWarning,
    NotFittedError,
    PrecisionWarning,
    SelectionWarning,
    StreammixError,
    ThresholdWarning,
)
from .io import as_source, read_parquet, read_zarr
from .scoring import AnomalyScorer

__version__ = "0.1.0"

__all__ = [
    "AnomalyScorer",
    "BayesianGaussianMixture",
    "CollapsedComponentError",
    "ConvergenceWarning",
    "DataError",
    "GaussianMixture",
    "KMeans",
    "KMeansSelection",
    "MiniBatchKMeans",
    "ModelFileError",
    "ModelFileWarning",
    "Selection",
    "SelectionWarning",
    "NotFittedError",
    "PrecisionWarning",
    "StreammixError",
    "ThresholdWarning",
    "__version__",
    "as_source",
    "load",
    "read_parquet",
    "read_zarr",
    "select",
    "select_kmeans",
]
