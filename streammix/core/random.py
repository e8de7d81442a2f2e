"""Random numbers tied to rows, not to chunks.

A counter-based generator (Philox) positioned at a row's own offset gives
every row the same draws however the data is chunked, so results that use
per-row randomness do not depend on chunk sizes or on the number of workers.
"""

from __future__ import annotations

import numpy as np


def row_uniforms(seed: int, start: int, n_rows: int, per_row: int = 1) -> np.ndarray:
    """Uniform [0, 1) draws for rows ``start:start + n_rows``, shape (n_rows, per_row)."""
    first = start * per_row
    bit_generator = np.random.Philox(key=seed)
    bit_generator.advance(first // 4)  # Philox yields four 64-bit words per counter step
    skip = first % 4
    draws = np.random.Generator(bit_generator).random(skip + n_rows * per_row)[skip:]
    return draws.reshape(n_rows, per_row)


def uniforms_at(seed: int, rows, n_rows: int) -> np.ndarray:
    """One uniform [0, 1) draw per row: ``rows`` is the first global row of a
    contiguous block of ``n_rows``, or an array of the rows' global indices
    (rows gathered from several chunks). A row's draw is the same either way.
    """
    if np.ndim(rows) == 0:
        return row_uniforms(seed, int(rows), n_rows)[:, 0]
    rows = np.asarray(rows, dtype=np.int64)
    # one contiguous run at a time: Philox jumps to each run's first row
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return np.concatenate([row_uniforms(seed, int(run[0]), len(run))[:, 0]
                           for run in np.split(rows, breaks)]) if len(rows) else np.zeros(0)
