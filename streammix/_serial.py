"""Nested state as JSON plus NumPy arrays: the no-pickle format of checkpoints.

:func:`flatten` turns nested dicts, lists, tuples, NumPy arrays, scalars and
*registered* dataclasses / NamedTuples into a JSON-able skeleton and a dict of
arrays; :func:`unflatten` rebuilds them. Only registered classes can be
rebuilt, so reading state never runs arbitrary code.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

_TYPES: dict[str, type] = {}


def serializable(cls):
    """Class decorator: allow ``cls`` (a dataclass or NamedTuple) in saved state."""
    _TYPES[cls.__qualname__] = cls
    return cls


def _fields(obj) -> dict:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    return obj._asdict()  # NamedTuple


def flatten(obj, arrays: dict, prefix: str = "a"):
    """The JSON skeleton of ``obj``; its arrays are added to ``arrays``."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        key = f"{prefix}{len(arrays)}"
        arrays[key] = obj
        return {"$array": key}
    if type(obj).__qualname__ in _TYPES:
        fields = {k: flatten(v, arrays, prefix) for k, v in _fields(obj).items()}
        return {"$type": type(obj).__qualname__, "fields": fields}
    if isinstance(obj, dict):
        return {"$dict": {str(k): flatten(v, arrays, prefix) for k, v in obj.items()}}
    if isinstance(obj, tuple):
        return {"$tuple": [flatten(v, arrays, prefix) for v in obj]}
    if isinstance(obj, list):
        return [flatten(v, arrays, prefix) for v in obj]
    raise TypeError(f"cannot save a {type(obj).__name__} in streammix state")


def unflatten(skeleton, arrays):
    """Rebuild what :func:`flatten` took apart."""
    if isinstance(skeleton, list):
        return [unflatten(v, arrays) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "$array" in skeleton:
        return arrays[skeleton["$array"]]
    if "$tuple" in skeleton:
        return tuple(unflatten(v, arrays) for v in skeleton["$tuple"])
    if "$dict" in skeleton:
        return {k: unflatten(v, arrays) for k, v in skeleton["$dict"].items()}
    cls = _TYPES.get(skeleton.get("$type"))
    if cls is None:
        raise ValueError(f"unknown type {skeleton.get('$type')!r} in saved state")
    return cls(**{k: unflatten(v, arrays) for k, v in skeleton["fields"].items()})


def dumps(obj) -> tuple[bytes, dict]:
    """``obj`` as UTF-8 JSON bytes and its arrays."""
    arrays: dict = {}
    skeleton = flatten(obj, arrays)
    return json.dumps(skeleton).encode("utf-8"), arrays


def loads(meta: bytes, arrays: dict):
    return unflatten(json.loads(meta.decode("utf-8")), arrays)
