"""Deprecated alias of :mod:`streammix.scoring.http` (moved in streammix 0.2)."""

from .._moved import alias

alias(__name__, "streammix.scoring.http")
