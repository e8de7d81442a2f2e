"""Deprecated alias of :mod:`streammix.scoring.adaptive` (moved in streammix 0.2)."""

from ._moved import alias

alias(__name__, "streammix.scoring.adaptive")
