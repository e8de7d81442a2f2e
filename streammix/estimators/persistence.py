"""Model files: one zip (``.npz``) of NumPy arrays plus JSON metadata; never pickle.

Layout: ``__meta__`` holds UTF-8 JSON (format name and version, estimator
class, constructor parameters, scalar attributes); every array parameter or
fitted array is its own ``.npy`` entry. Loading uses ``allow_pickle=False``
and looks the class up in a fixed registry, so a file can never run code.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np

from .._atomic import atomic_write
from ..exceptions import ModelFileError

FORMAT = "streammix-model"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type] = {}

#: Saved with any model that has them: the anomaly threshold and how it was set.
CALIBRATION_ATTRIBUTES = ("anomaly_threshold_", "anomaly_contamination_")


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


def save_model(estimator, path) -> None:
    """Write ``estimator`` (fitted) to ``path`` atomically."""
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "estimator": type(estimator).__name__,
            "params": {}, "dropped_params": [], "attributes": {}}
    arrays = {}
    for name, value in estimator.get_params().items():
        if isinstance(value, np.ndarray | list) and np.asarray(value).dtype.kind in "biuf":
            arrays[f"param.{name}"] = np.asarray(value)
            continue
        try:
            meta["params"][name] = _jsonable(value)
        except TypeError:  # a Client or a Generator: not part of the model
            meta["dropped_params"].append(name)
    for name in (*estimator._fitted_attributes, *CALIBRATION_ATTRIBUTES):
        if not hasattr(estimator, name):
            continue
        value = getattr(estimator, name)
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[f"attr.{name}"] = value
        elif isinstance(value, np.ndarray):  # feature names
            meta["attributes"][name] = [str(v) for v in value]
        else:
            meta["attributes"][name] = _jsonable(value)
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as handle:
        np.savez(handle, __meta__=meta_bytes, **arrays)


def load(path):
    """Load a model written by ``save``.

    Raises
    ------
    ModelFileError
        The file is missing, damaged, not a streammix model, or from a newer
        format version.

    Examples
    --------
    >>> import streammix as sm
    >>> model = sm.load("model.npz")  # doctest: +SKIP
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(bytes(archive["__meta__"]).decode("utf-8"))
            entries = {name: archive[name] for name in archive.files if name != "__meta__"}
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a streammix model file, or damaged ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a streammix model file")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written in model format version {version}, newer than this streammix "
            f"reads ({FORMAT_VERSION}); upgrade streammix")
    cls = _REGISTRY.get(meta.get("estimator"))
    if cls is None:
        raise ModelFileError(f"{path}: unknown estimator {meta.get('estimator')!r}")
    params = dict(meta["params"])
    params.update({k[6:]: v for k, v in entries.items() if k.startswith("param.")})
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ModelFileError(f"{path}: parameters do not fit {cls.__name__} ({exc})") from None
    for name, value in meta["attributes"].items():
        setattr(estimator, name, np.asarray(value, dtype=object) if isinstance(value, list)
                else value)
    for key, value in entries.items():
        if key.startswith("attr."):
            setattr(estimator, key[5:], value)
    estimator._after_load()
    return estimator
