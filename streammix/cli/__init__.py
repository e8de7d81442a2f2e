"""The ``streammix`` command line: a thin shell over the library.

User errors (bad data, a missing file, a bad model file, bad parameters) exit
with code 2 and one line on stderr; ``--debug`` shows the traceback instead.
Progress (a bar per data pass, a line per iteration) goes to stderr when it is
a terminal, or with ``-v``; ``-q`` silences it.

One module per group of commands; each parses its options and calls library
functions: :mod:`.fitting` (fit, select, calibrate), :mod:`.data` (predict,
sample, make-data), :mod:`.models` (info, plot), :mod:`.score` (score) and
:mod:`.serving` (serve). :mod:`.app` holds the group, :mod:`.options` the
shared options.
"""

from . import data, fitting, models, score, serving  # noqa: F401 -- they register commands
from .app import main

__all__ = ["main"]
