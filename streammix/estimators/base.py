"""What every streammix estimator shares: scikit-learn's parameter protocol and input handling."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import validate_data

from ..engine import Engine
from ..engine.checkpoint import Checkpoint
from ..exceptions import DataError, NotFittedError
from ..io import Source, _is_zarr_path, as_source, is_path_input, resolve_dtype
from ..io.daskcoll import is_dask_collection
from ..io.memory import check_frame_columns


def _fingerprint_value(value):
    """A JSON-able stand-in for a parameter value, for checkpoint fingerprints."""
    if isinstance(value, np.ndarray | list | tuple) and np.asarray(value).dtype.kind in "biuf":
        array = np.ascontiguousarray(value, dtype=np.float64)
        return {"sha256": hashlib.sha256(array.data).hexdigest(), "shape": list(array.shape)}
    if callable(value):
        return f"callable {getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
    if isinstance(value, np.random.Generator | np.random.RandomState):
        return "generator"
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def check_random_state(random_state) -> np.random.SeedSequence:
    """The root seed of every random draw of a fit, from ``random_state``.

    Accepts None, an int, a ``numpy.random.Generator`` or ``RandomState``
    (one integer is drawn from a generator to seed the fit).
    """
    if random_state is None or isinstance(random_state, int | np.integer):
        return np.random.SeedSequence(random_state)
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(2**63)))
    if isinstance(random_state, np.random.RandomState):
        return np.random.SeedSequence(int(random_state.randint(2**31)))
    raise ValueError(f"random_state must be None, an int or a Generator, got {random_state!r}")


def restart_seeds(root: np.random.SeedSequence, n_init: int) -> list:
    """The seeds of a fit's ``n_init`` restarts: ``root.spawn(n_init)`` of a fresh copy.

    A fresh copy each time, so that every candidate of a model-selection grid
    gets the very seeds a standalone fit with the same parameters gets (a
    SeedSequence counts its spawns; spawning twice from one gives new seeds).
    """
    return np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key).spawn(n_init)


def _is_zarr_input(X) -> bool:
    return isinstance(X, str | os.PathLike) and _is_zarr_path(os.fspath(X))


def _validated_by_sklearn(X) -> bool:
    """Whether ``X`` is in-memory data that scikit-learn's ``validate_data`` checks.

    NumPy arrays, lists, pandas frames and scipy.sparse matrices are; paths,
    Dask collections, Zarr arrays, pyarrow Tables and sources are read chunk by
    chunk by streammix's own readers, which check them as they read.
    """
    if isinstance(X, Source) or is_path_input(X) or is_dask_collection(X):
        return False
    return not type(X).__module__.startswith(("zarr", "pyarrow"))


def _column_names(X):
    """Column names of a DataFrame when all are strings (as scikit-learn takes them)."""
    columns = getattr(X, "columns", None)
    if columns is not None and len(columns) and all(isinstance(c, str) for c in columns):
        return tuple(columns)
    return None


class StreammixEstimator(BaseEstimator):
    """Base class: scikit-learn's estimator protocol, and streammix's input handling.

    ``get_params``/``set_params``, ``clone``, the ``repr`` and the tags come from
    ``sklearn.base.BaseEstimator``. As in scikit-learn, constructors store their
    arguments unchanged and do no validation; ``fit`` validates.
    """

    #: scipy.sparse input is accepted (k-means); the others refuse it as scikit-learn does.
    _accept_sparse = False
    #: Fewest rows ``fit`` accepts (scikit-learn's ``ensure_min_samples``).
    _min_samples = 1

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = self._accept_sparse
        return tags

    def __repr__(self, N_CHAR_MAX=700):
        # storage_options may hold credentials: the repr shows their keys, never values
        options = getattr(self, "storage_options", None)
        if not isinstance(options, dict) or not options:
            return super().__repr__(N_CHAR_MAX)
        self.storage_options = {key: "***" for key in options}
        try:
            return super().__repr__(N_CHAR_MAX)
        finally:
            self.storage_options = options

    # -- execution ----------------------------------------------------------
    def _engine(self) -> Engine:
        return Engine(self.scheduler, self.n_workers, progress=self._progress(),
                      cache=getattr(self, "cache", "auto"))

    def _progress(self) -> bool:
        """Progress bars per data pass when verbose (on stderr)."""
        return bool(getattr(self, "verbose", 0))

    def save(self, path):
        """Write the fitted model to ``path`` (``.npz`` zip, no pickle); see :func:`load`.

        ``path`` may be a URL (``s3://bucket/models/m.npz``): it is written in
        one request, with this estimator's ``storage_options``.
        """
        from .persistence import save_model

        self._check_fitted()
        save_model(self, path, getattr(self, "storage_options", None))

    def _loaded(self):
        """Called when a model file's attributes are set, before ``_check_model``:
        turn what the file holds as arrays into the attributes' own types."""

    #: Model-file attributes that a fitted model may lack (see ``persistence``).
    _optional_attributes = ("feature_names_in_",)

    #: Parameters that do not change a fit's result (left out of checkpoint fingerprints).
    _RUN_ONLY = frozenset({"verbose", "verbose_interval", "scheduler", "n_workers", "checkpoint",
                           "restart", "compute_labels", "cache", "storage_options",
                           # partial_fit's step sizes: fit ignores them
                           "learning_decay", "learning_offset", "forgetting_factor"})

    @contextlib.contextmanager
    def _fit_engine(self, source, extra=None):
        """The engine for a fit: with ``checkpoint=DIR``, one that journals and resumes."""
        if not getattr(self, "checkpoint", None):
            with self._engine() as engine:
                yield engine
            return
        params = {name: _fingerprint_value(value) for name, value in self.get_params().items()
                  if name not in self._RUN_ONLY}
        params["dtype"] = str(source.dtype)  # dtype=None and the dtype it resolves to: one fit
        data = source.fingerprint()
        if source.sample_weight is not None:  # other weights, another fit
            data["sample_weight"] = _fingerprint_value(source.sample_weight)
        fingerprint = {"estimator": type(self).__name__, "data": data,
                       "params": params, "start": self._start_fingerprint(), "extra": extra}
        with Checkpoint(self.checkpoint, fingerprint, restart=self.restart,
                        storage_options=getattr(self, "storage_options", None)) as checkpoint, \
                Engine(self.scheduler, self.n_workers, checkpoint=checkpoint,
                       progress=self._progress(), cache=getattr(self, "cache", "auto")) as engine:
            yield engine

    def _start_fingerprint(self):
        """What, besides data and parameters, a fit starts from (a warm start's model)."""
        return None

    def _root_seed(self, engine) -> np.random.SeedSequence:
        """The fit's root seed; without random_state, the one its checkpoint keeps."""
        if self.random_state is None and engine.checkpoint is not None:
            return np.random.SeedSequence(engine.checkpoint.entropy)
        return check_random_state(self.random_state)

    # -- input ------------------------------------------------------------
    def _source(self, X, *, fitted=False, sample_weight=None) -> Source:
        """``X`` (with ``sample_weight``, when given) as a chunked source; see :meth:`_read`."""
        source = self._read(X, fitted=fitted)
        return source if sample_weight is None else source.with_weights(sample_weight)

    def _read(self, X, *, fitted=False) -> Source:
        """``X`` as a chunked source with this estimator's dtype and chunk size.

        In-memory input is checked by scikit-learn's ``validate_data`` (its
        errors and messages, and ``n_features_in_``/``feature_names_in_`` set
        by ``fit``); other input by the streammix readers. For prediction,
        Parquet input reads the fitted feature columns, and the number and
        names of features must match those seen in ``fit``.
        """
        if fitted:
            self._check_fitted()
        if _validated_by_sklearn(X):
            names = _column_names(X)
            if type(X).__module__.startswith("pandas") and hasattr(X, "dtypes"):
                check_frame_columns(X)  # name the column, where scikit-learn would not
            X = validate_data(
                self, X, reset=not fitted, ensure_all_finite=False,  # checked per chunk, located
                accept_sparse="csr" if self._accept_sparse else False,
                dtype=[np.float64, np.float32] if self.dtype is None else resolve_dtype(self.dtype),
                ensure_min_samples=1 if fitted else self._min_samples)
            source = as_source(X, chunk_size=self._chunk_rows(), dtype=self.dtype)
            source.feature_names = names
            return source
        names = getattr(self, "feature_names_in_", None) if fitted else None
        reads_columns = names is not None and is_path_input(X) and not _is_zarr_input(X)
        columns = list(names) if reads_columns else None
        source = as_source(X, chunk_size=self._chunk_rows(), dtype=self.dtype, columns=columns,
                           storage_options=getattr(self, "storage_options", None))
        if fitted:
            if source.n_features != self.n_features_in_:
                raise DataError(
                    f"has {source.n_features} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input", file=source.name)
            if (names is not None and source.feature_names is not None
                    and tuple(source.feature_names) != tuple(names)):
                raise DataError(
                    f"feature names {list(source.feature_names)} differ from those seen in fit "
                    f"{list(names)}", file=source.name)
        return source

    def _chunk_rows(self):
        """Rows per chunk for this estimator's sources (None: the source's default)."""
        return self.chunk_size

    def _set_features(self, source: Source):
        self.n_features_in_ = source.n_features
        if source.feature_names is not None:
            self.feature_names_in_ = np.asarray(source.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _apply(self, fn, params, X, *, width=None, dtype=None):
        """``fn(params, block, start)`` on every row of ``X`` (checked against the fit)."""
        source = self._source(X, fitted=True)
        with self._engine() as engine:
            return engine.per_row(fn, params, source, width=width, dtype=dtype)

    def _check_common_params(self):
        """Checks every estimator shares: dtype, random_state, and booleans that are booleans."""
        resolve_dtype(self.dtype)
        options = getattr(self, "storage_options", None)
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"storage_options must be a dict or None, got "
                             f"{type(options).__name__}")
        if not (self.random_state is None or isinstance(
                self.random_state, int | np.integer | np.random.Generator | np.random.RandomState)
                ) or isinstance(self.random_state, bool):
            raise ValueError(f"random_state must be None, an int or a Generator, got "
                             f"{self.random_state!r}")
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if isinstance(parameter.default, bool) and not isinstance(getattr(self, name),
                                                                      bool | np.bool_):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def _check_number(self, name, low=0.0):
        """Raise a ValueError unless parameter ``name`` is a finite number >= ``low``."""
        value = getattr(self, name)
        if not isinstance(value, int | float | np.integer | np.floating) or \
                isinstance(value, bool) or not np.isfinite(value) or value < low:
            raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")

    def _check_integer(self, name, low):
        """Raise a ValueError unless parameter ``name`` is an integer >= ``low``."""
        value = getattr(self, name)
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    #: The fitted attribute whose presence means fitted (``validate_data`` sets
    #: ``n_features_in_`` before the fit has run).
    _fitted_attribute: str

    def __sklearn_is_fitted__(self):
        return hasattr(self, self._fitted_attribute)

    def _check_fitted(self):
        """Raise scikit-learn's (and streammix's) NotFittedError before ``fit``."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")
