"""Iterate a batch of models to convergence, one data pass per iteration.

All models still running (``n_init`` restarts, or a grid of candidates) share
each pass: the chunk function computes every active model's statistics from
one read of the chunk. The loop knows nothing of which model it drives: it is
given ``step`` (per-chunk statistics), ``update`` and, when the statistics do
not merge by their own ``merge`` method, ``merge``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .._serial import serializable
from .engine import Engine, merge_stats


@serializable
@dataclass
class Run:
    """One model of the batch: its parameters and how its iterations went."""

    params: Any
    previous: float = float("-inf")  # objective before the first iteration
    history: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    done: bool = False
    extra: dict = field(default_factory=dict)  # model-specific bookkeeping


def _batch_step(step, params_batch, block, start, *weights):
    return [step(params, block, start, *weights) for params in params_batch]


def _batch_merge(merge, a, b):
    return [merge(x, y) for x, y in zip(a, b, strict=True)]


def batch_map_reduce(engine: Engine, source, step: Callable, params_batch,
                     merge: Callable = merge_stats):
    """One pass computing ``step``'s statistics for every parameter set of the batch."""
    return engine.map_reduce(partial(_batch_step, step), list(params_batch), source,
                             partial(_batch_merge, merge))


def iterate(
    engine: Engine,
    source,
    runs: list[Run],
    *,
    step: Callable,
    merge: Callable = merge_stats,
    update: Callable[[Run, Any], tuple[Any, float, bool]],
    max_iter: int,
    on_iteration: Callable[[list[Run]], None] | None = None,
) -> list[Run]:
    """Run every model in ``runs`` until it converges or reaches ``max_iter``.

    ``update(run, stats)`` returns ``(new_params, objective, converged)``; it
    may keep bookkeeping in ``run.extra``. Each pass reads every chunk once,
    whatever the number of active models. With a checkpoint on the engine, the
    runs are saved after every iteration and a re-run resumes from them.
    """
    loop = engine.checkpoint.loop(template=runs) if engine.checkpoint else \
        nullcontext((None, None))
    with loop as (saved, save):
        if saved is not None:
            runs[:] = saved
        for run in runs:
            run.done = run.done or run.n_iter >= max_iter
        while active := [run for run in runs if not run.done]:
            stats = batch_map_reduce(engine, source, step, [run.params for run in active], merge)
            for run, run_stats in zip(active, stats, strict=True):
                run.params, objective, run.converged = update(run, run_stats)
                run.previous = objective
                run.history.append(objective)
                run.n_iter += 1
                run.done = run.converged or run.n_iter >= max_iter
            if save is not None:
                save(runs)
            if on_iteration is not None:
                on_iteration(runs)
    return runs
