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
