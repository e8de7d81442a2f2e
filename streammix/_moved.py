"""Old module paths kept as deprecated aliases of where their code moved."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make module ``old`` the module ``new`` (same objects), with a DeprecationWarning."""
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning,
                  stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
