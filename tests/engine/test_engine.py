"""The engine: chunk-order tree reduction, one read per chunk per pass, row sampling."""

from __future__ import annotations

from operator import add

import numpy as np
import pytest

import streammix as sm
from streammix.engine import FAN_IN, Engine, sample_rows


def first_column(params, block, start):
    return block[:, 0].copy()


def concatenate(a, b):
    return np.concatenate([a, b])


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_reduction_follows_chunk_order_not_completion_order(blobs, scheduler):
    # Concatenation is not commutative: any reordering would show.
    source = sm.as_source(blobs, chunk_size=7)
    assert len(source.plan()) > FAN_IN**2  # a tree of three levels
    with Engine(scheduler, n_workers=2) as engine:
        result = engine.map_reduce(first_column, None, source, concatenate)
    np.testing.assert_array_equal(result, blobs[:, 0])


def test_map_blocks_and_lazy_map_keep_row_order(blobs_parquet, blobs):
    source = sm.read_parquet(blobs_parquet, chunk_size=50)
    with Engine() as engine:
        eager = np.concatenate(engine.map_blocks(first_column, None, source))
        lazy = engine.map_lazy(first_column, None, source, width=None, dtype=float)
    np.testing.assert_array_equal(eager, blobs[:, 0])
    np.testing.assert_array_equal(lazy.compute(), blobs[:, 0])


def test_each_chunk_read_once_per_pass(blobs_parquet, read_counter):
    source = sm.read_parquet(blobs_parquet, chunk_size=60)
    with Engine(cache=False) as engine:
        for _ in range(3):
            engine.map_reduce(lambda p, b, s: b.sum(0), None, source, add)
    assert sorted(read_counter) == [c.index for c in source.plan()]
    assert set(read_counter.values()) == {3}


def test_sample_rows_is_a_uniform_subset_in_row_order(blobs):
    source = sm.as_source(blobs, chunk_size=50)
    with Engine() as engine:
        sample = sample_rows(engine, source, 100, np.random.default_rng(0))
        again = sample_rows(engine, source, 100, np.random.default_rng(0))
        everything = sample_rows(engine, source, 10_000, np.random.default_rng(0))
    np.testing.assert_array_equal(sample, again)
    index = {tuple(row): i for i, row in enumerate(blobs)}
    positions = [index[tuple(row)] for row in sample]
    assert len(set(positions)) == 100 and positions == sorted(positions)
    np.testing.assert_array_equal(everything, blobs)


def test_blas_runs_one_thread_per_engine_thread_for_the_whole_session():
    # Between passes too: BLAS threads woken there would spin into the next pass.
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = blas_threads()
    with Engine(n_workers=2) as engine:
        assert blas_threads() == {1}
        engine.map_reduce(lambda p, b, s: b.sum(0), None, sm.as_source(np.ones((10, 2))), add)
        assert blas_threads() == {1}
    assert blas_threads() == before


def test_stages_name_their_passes(blobs, monkeypatch):
    """The caller names a stage and its number of passes; the engine counts the passes
    and names their progress bars (innermost stage), others keep their global number."""
    import tqdm.auto

    names = []
    real = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, desc, **kw: (names.append(desc),
                                                                  real(*a, **kw))[1])
    source = sm.as_source(blobs, chunk_size=50)
    with Engine("synchronous", progress=True) as engine:
        engine.map_reduce(first_column, None, source, concatenate)
        with engine.stage("seeding", 2):
            engine.map_reduce(first_column, None, source, concatenate)
            with engine.stage("inner"):
                engine.map_reduce(first_column, None, source, concatenate)
            engine.map_reduce(first_column, None, source, concatenate)
        engine.map_reduce(first_column, None, source, concatenate)
    assert names == ["pass 1", "seeding pass 1/2", "inner pass 1", "seeding pass 2/2",
                     "pass 5"]
