"""Errors and warnings raised by streammix.

Every error that is the user's to fix derives from :class:`StreammixError`, so
the command line can turn it into a one-line message instead of a traceback.
The data errors also derive from :class:`ValueError`, and ``NotFittedError`` and
``ConvergenceWarning`` from scikit-learn's classes of those names, so code
written against scikit-learn catches them.
"""

from __future__ import annotations

from sklearn import exceptions as _sklearn


class StreammixError(Exception):
    """Base class of the errors a user can act on."""


class DataError(StreammixError, ValueError):
    """The input data cannot be used: says where (file, column, row group, row).

    Parameters
    ----------
    message : str
        What is wrong, and what to do about it.
    file, column, row_group, row : optional
        Where it is. Each given part is prefixed to the message.
    """

    def __init__(self, message, *, file=None, column=None, row_group=None, row=None):
        self.reason = message
        self.file = None if file is None else str(file)
        self.column = column
        self.row_group = row_group
        self.row = row
        where = []
        if self.file is not None:
            where.append(self.file)
        if row_group is not None:
            where.append(f"row group {row_group}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def __reduce__(self):
        # Errors cross process boundaries on a Dask cluster: keep the keywords.
        return (
            _rebuild_data_error,
            (self.reason, self.file, self.column, self.row_group, self.row),
        )


def _rebuild_data_error(message, file, column, row_group, row):
    return DataError(message, file=file, column=column, row_group=row_group, row=row)


class ModelFileError(StreammixError, ValueError):
    """A model file is damaged, foreign, or from a newer format version."""


class CollapsedComponentError(StreammixError, ValueError):
    """A mixture component's covariance is no longer positive definite."""


class NotFittedError(StreammixError, _sklearn.NotFittedError):
    """The estimator is used before ``fit`` (a scikit-learn ``NotFittedError`` too)."""


class CheckpointError(StreammixError):
    """A checkpoint directory belongs to another fit, or is damaged."""


class CheckpointInUseError(CheckpointError):
    """Another live process holds the checkpoint directory's lock."""


class OutputInUseError(StreammixError):
    """Another live job holds the lease of an output folder or prefix (it is writing it)."""


class SnapshotError(StreammixError, ValueError):
    """An adaptive scorer's snapshot cannot be used (damaged, foreign, other options)."""


class RecordError(ValueError):
    """One streamed record cannot be scored; says why (and its id, when it has one).

    Not a :class:`StreammixError`: a stream turns it into an error record in the
    record's place and goes on; it never ends a command.
    """

    def __init__(self, message, record_id=None):
        super().__init__(message)
        self.record_id = record_id


class NpzError(ValueError):
    """An entry of an ``.npz`` file is missing, foreign, damaged or not as expected."""


class ClusterError(StreammixError):
    """The Dask scheduler or client went away during a computation."""


class ConvergenceWarning(_sklearn.ConvergenceWarning):
    """An iterative fit stopped at ``max_iter`` before meeting ``tol``.

    A subclass of scikit-learn's, so filters and handlers written for it apply.
    """


class SelectionWarning(UserWarning):
    """A model selection's pick is doubtful: the best candidate lies on the grid's edge
    (widen it), or candidates with more free parameters than rows were left out."""


class ModelFileWarning(UserWarning):
    """A model file holds something that loading ignored (runtime-only parameters)."""


class PrecisionWarning(UserWarning):
    """Reduced-precision arithmetic (``dtype="float32"``) has lost digits the result needs."""


class ThresholdWarning(UserWarning):
    """A threshold given explicitly flags every record, or almost none, of the data the
    model describes: outside the range of scores the model gives its own data."""
