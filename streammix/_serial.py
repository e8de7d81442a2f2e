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


def conforms(value, template) -> str | None:
    """Why ``value`` (read back from a file) cannot stand where ``template`` stands, or None.

    Same registered types, arrays of the same shape and dtype (finite when
    float), the same keys, and lists and tuples of the same length; an empty
    list in ``template`` takes a list of numbers; ``None`` takes anything.
    """
    if template is None:
        return None
    if isinstance(template, np.ndarray):
        if not isinstance(value, np.ndarray) or value.shape != template.shape \
                or value.dtype != template.dtype:
            return f"an array of shape {template.shape} and dtype {template.dtype} was expected"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return "an array holds values that are not finite"
        return None
    if type(template).__qualname__ in _TYPES:
        if type(value) is not type(template):
            return f"a {type(template).__name__} was expected"
        return _first(conforms(getattr(value, k), v) for k, v in _fields(template).items())
    if isinstance(template, dict):
        if not isinstance(value, dict) or set(template) - set(value):
            return f"a mapping with {sorted(template)} was expected"
        return _first(conforms(value[k], v) for k, v in template.items())
    if isinstance(template, list | tuple):
        if type(value) is not type(template):
            return f"a {type(template).__name__} was expected"
        if isinstance(template, list) and not template:
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            return None if numbers else "a list of numbers was expected"
        if len(value) != len(template):
            return f"{len(template)} items were expected, found {len(value)}"
        return _first(conforms(v, t) for v, t in zip(value, template, strict=True))
    if isinstance(template, bool) or isinstance(value, bool):
        return None if type(value) is type(template) else "a boolean was expected"
    if isinstance(template, int | float):
        return None if isinstance(value, int | float) else "a number was expected"
    return None if isinstance(value, type(template)) else \
        f"a {type(template).__name__} was expected"


def _first(reasons):
    return next((r for r in reasons if r is not None), None)


def dumps(obj) -> tuple[bytes, dict]:
    """``obj`` as UTF-8 JSON bytes and its arrays."""
    arrays: dict = {}
    skeleton = flatten(obj, arrays)
    return json.dumps(skeleton).encode("utf-8"), arrays


def loads(meta: bytes, arrays: dict):
    return unflatten(json.loads(meta.decode("utf-8")), arrays)
