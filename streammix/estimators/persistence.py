"""Model files: one zip (``.npz``) of NumPy arrays plus JSON metadata; never pickle.

Layout: ``__meta__`` holds UTF-8 JSON (format name and version, estimator
class, constructor parameters, scalar attributes); every array parameter
(``param.NAME``) or fitted array (``attr.NAME``) is its own stored ``.npy``
entry. A model file describes a model, not a run: the runtime-only parameters
(:data:`RUNTIME_PARAMS`: where and how to compute) are never written, and are
ignored, with a :class:`~streammix.exceptions.ModelFileWarning`, when a file
has them, so that no file can make streammix connect anywhere.

Loading trusts nothing in the file before checking it: the class comes from a
fixed registry; only the entries the format defines are read (see
:mod:`streammix.io.npz`: no zip bomb, shapes checked before data is read); every
parameter is validated as ``fit`` validates it; every attribute has its type,
shape and value checked (finite numbers, weights on the simplex, positive
definite precisions) by the estimator's ``_check_model``. Any failure is one
:class:`~streammix.exceptions.ModelFileError` naming the file and the field.
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
import zipfile

import numpy as np

from ..core.calibration import check_contamination, outside
from ..exceptions import ModelFileError, ModelFileWarning
from ..io.npz import NpzError, NpzReader, json_bytes, write_npz

FORMAT = "streammix-model"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type] = {}

#: Parameters that say where and how to compute, not what the model is.
RUNTIME_PARAMS = frozenset({"verbose", "verbose_interval", "scheduler", "n_workers", "checkpoint",
                            "restart", "cache", "chunk_size", "storage_options", "progress"})

#: Saved with any model that has them: the anomaly threshold, how it was set, and the
#: range of scores the model gives its own data (the threshold must lie in it).
CALIBRATION_ATTRIBUTES = {"anomaly_threshold_": float, "anomaly_contamination_": float | None,
                          "anomaly_score_range_": list[float]}

#: Entries that files of streammix 0.1 may hold and that are no longer read (the
#: training data's labels are not part of a model).
_LEGACY_ENTRIES = ("attr.labels_",)

#: Largest metadata entry read (feature names of a very wide table fit easily).
_MAX_META_BYTES = 64 * 2**20


def register(cls):
    """Class decorator: let :func:`load` rebuild this estimator."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple) and all(_jsonable(v) is v for v in value):
        return list(value)
    if isinstance(value, np.dtype | type):
        return np.dtype(value).name
    raise TypeError


def model_file_arrays(estimator) -> dict:
    """The entries of ``estimator``'s model file (name -> array), ``__meta__`` included;
    runtime-only parameters left out."""
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "estimator": type(estimator).__name__,
            "params": {}, "dropped_params": [], "attributes": {}}
    arrays = {}
    for name, value in estimator.get_params().items():
        if name in RUNTIME_PARAMS:
            continue
        if isinstance(value, np.ndarray | list) and np.asarray(value).dtype.kind in "biuf":
            arrays[f"param.{name}"] = np.asarray(value)
            continue
        try:
            meta["params"][name] = _jsonable(value)
        except TypeError:  # a Generator or a callable: not part of the model
            meta["dropped_params"].append(name)
    for name in {**estimator._model_scalars, **CALIBRATION_ATTRIBUTES}:
        if hasattr(estimator, name):
            value = getattr(estimator, name)
            if isinstance(value, np.ndarray):  # feature names
                value = [str(v) for v in value]
            elif isinstance(value, list):
                value = [float(v) for v in value]
            meta["attributes"][name] = _jsonable(value)
    for name in estimator._model_arrays():
        arrays[f"attr.{name}"] = np.asarray(getattr(estimator, name))
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return arrays


def save_model(estimator, path, storage_options=None) -> None:
    """Write ``estimator`` (fitted) to ``path`` (or a URL) atomically; runtime-only
    parameters are left out."""
    write_npz(path, model_file_arrays(estimator), storage_options)


class _Invalid(ValueError):
    """A field of the file fails its check (turned into a ModelFileError naming the file)."""


#: The kind of an attribute that may be minus infinity (a lower bound before any iteration).
BOUND = "bound"


def _check_scalar(name, value, kind):
    """``value`` as ``kind``: int, float, BOUND, bool, list[float], list[str] or float | None."""
    if kind == float | None:
        return None if value is None else _check_scalar(name, value, float)
    if kind == BOUND:
        return -math.inf if value == -math.inf else _check_scalar(name, value, float)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value):
        return float(value)
    if kind == list[float] and isinstance(value, list):
        return [_check_scalar(name, v, float) for v in value]
    if kind == list[str] and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return np.asarray(value, dtype=object)
    what = {bool: "a boolean", int: "a non-negative integer", float: "a finite number",
            list[float]: "a list of finite numbers", list[str]: "a list of strings"}[kind]
    raise _Invalid(f"attribute {name!r} must be {what}, got {str(value)[:80]!r}")


def _read_meta(npz: NpzReader, path) -> dict:
    raw = npz.read("__meta__")
    if raw.nbytes > _MAX_META_BYTES:
        raise _Invalid("the metadata entry is too large")
    try:
        meta = json.loads(json_bytes(raw).decode("utf-8"), object_pairs_hook=_unique_keys)
    except _Invalid:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Invalid(f"the metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a streammix model file")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Invalid(f"format version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written in model format version {version}, newer than this streammix "
            f"reads ({FORMAT_VERSION}); upgrade streammix")
    for key in ("params", "attributes"):
        if not isinstance(meta.get(key), dict):
            raise _Invalid(f"the metadata has no {key!r} object")
    return meta


def _unique_keys(pairs) -> dict:
    """A JSON object whose keys are all different (else which value counts is a guess)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _Invalid(f"the metadata holds the key {twice[:80]!r} twice")
    return found


def _check_feature_names(names) -> None:
    """Feature names must be Unicode text (they are written to JSON and Parquet) and
    all different (a record's fields are looked up by name)."""
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid("attribute 'feature_names_in_' holds a name that is not Unicode "
                           "text (a lone surrogate)") from None
    if len(set(names)) != len(names):
        seen = set()
        twice = next(n for n in names if n in seen or seen.add(n))
        raise _Invalid(f"attribute 'feature_names_in_' names {twice[:80]!r} twice")


def _check_calibration(estimator) -> None:
    """The calibration saved with the model obeys AnomalyScorer's own rules: a
    contamination in (0, 0.5], and a threshold within the range of scores the model
    gives its own data (the recorded range; derived from the model for files without)."""
    contamination = getattr(estimator, "anomaly_contamination_", None)
    threshold = getattr(estimator, "anomaly_threshold_", None)
    recorded = getattr(estimator, "anomaly_score_range_", None)
    if contamination is not None:
        try:
            check_contamination(contamination, "attribute 'anomaly_contamination_'")
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
    for name, value in (("anomaly_contamination_", contamination),
                        ("anomaly_score_range_", recorded)):
        if value is not None and threshold is None:
            raise _Invalid(f"attribute {name!r} is set without 'anomaly_threshold_'")
    if recorded is not None and not (len(recorded) == 2 and recorded[0] < recorded[1]):
        raise _Invalid(f"attribute 'anomaly_score_range_' must be two numbers, low < high, "
                       f"got {str(recorded)[:80]}")
    if threshold is not None:
        score_range = recorded if recorded is not None else estimator._score_range()
        why = outside(score_range, threshold)
        if why is not None:
            raise _Invalid(f"attribute 'anomaly_threshold_': {why}")


def _params(meta, cls, npz, path) -> dict:
    """Constructor parameters from the file: the model's own, validated later by the class."""
    allowed = set(cls._get_param_names())
    params, ignored = {}, []
    array_params = {n[len("param."):] for n in npz.names if n.startswith("param.")}
    defaults = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()}
    for name in [*meta["params"], *array_params]:
        if name in RUNTIME_PARAMS:
            # Files of streammix 0.1 kept them, mostly at their defaults: report the others.
            if name in array_params or meta["params"][name] != defaults.get(name):
                ignored.append(name)
        elif name not in allowed:
            raise _Invalid(f"parameter {name!r} is not a parameter of {cls.__name__}")
        elif name in array_params:
            params[name] = npz.read(f"param.{name}")
        else:
            value = meta["params"][name]
            if isinstance(value, dict | list) and not (
                    isinstance(value, list) and all(isinstance(v, int | float) for v in value)):
                raise _Invalid(f"parameter {name!r} has a value of the wrong kind")
            params[name] = value
    if ignored:
        warnings.warn(f"{path}: ignored runtime-only parameter(s) in the model file: "
                      f"{', '.join(sorted(ignored))} (they are set where the model is used, "
                      "e.g. --scheduler)", ModelFileWarning, stacklevel=3)
    return params


def _load(npz: NpzReader, path):
    meta = _read_meta(npz, path)
    cls = _REGISTRY.get(meta.get("estimator"))
    if cls is None:
        raise _Invalid(f"unknown estimator {str(meta.get('estimator'))[:80]!r}")
    estimator = cls(**_params(meta, cls, npz, path))
    scalars = {**cls._model_scalars, **CALIBRATION_ATTRIBUTES}
    attributes = meta["attributes"]
    for name in attributes:
        if name not in scalars:
            raise _Invalid(f"attribute {name!r} is not an attribute of {cls.__name__}")
    for name, kind in scalars.items():
        if name in attributes:
            setattr(estimator, name, _check_scalar(name, attributes[name], kind))
        elif name not in CALIBRATION_ATTRIBUTES and name not in cls._optional_attributes:
            raise _Invalid(f"attribute {name!r} is missing")
    if estimator.n_features_in_ < 1:
        raise _Invalid("attribute 'n_features_in_' must be at least 1")
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and len(names) != estimator.n_features_in_:
        raise _Invalid(f"attribute 'feature_names_in_' has {len(names)} names for "
                       f"{estimator.n_features_in_} features")
    if names is not None:
        _check_feature_names(list(names))
    try:
        estimator._check_params(estimator.n_features_in_)
    except (ValueError, TypeError) as exc:
        raise _Invalid(f"parameters: {exc}") from None
    shapes = estimator._model_arrays()
    for name in npz.names:
        if name not in ("__meta__", *_LEGACY_ENTRIES) and not name.startswith("param.") and \
                name.removeprefix("attr.") not in shapes:
            raise _Invalid(f"unexpected entry {name!r}")
    for name, shape in shapes.items():
        array = npz.read(f"attr.{name}", shape)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise _Invalid(f"attribute {name!r} has values that are not finite")
        # float32 models (fitted on float32 data) stay float32, as they were fitted
        setattr(estimator, name, array.astype(np.float32 if array.dtype == np.float32
                                              else np.float64))
    estimator._loaded()
    try:
        estimator._check_model()
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    _check_calibration(estimator)
    return estimator


def load(path, storage_options=None):
    """Load a model written by ``save`` (a path, or a URL read with ``storage_options``),
    checking every field before it is used.

    Runtime-only parameters (scheduler, workers, checkpoint, cache, chunk size,
    ...) are never taken from a file: give them to the loaded model.

    Raises
    ------
    ModelFileError
        The file is missing, damaged, not a streammix model, from a newer
        format version, or has a field that fails its check (named).

    Examples
    --------
    >>> import streammix as sm
    >>> model = sm.load("model.npz")  # doctest: +SKIP
    >>> model.set_params(scheduler="tcp://127.0.0.1:8786")  # doctest: +SKIP
    """
    try:
        with NpzReader(path, storage_options) as npz:
            return _load(npz, path)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{path}: not a streammix model file, or damaged ({exc})") from None
    except (NpzError, _Invalid) as exc:
        raise ModelFileError(f"{path}: not a valid streammix model file: {exc}") from None
