"""Map a per-chunk function over a source's plan on Dask, tree-reduce in chunk order.

The engine knows nothing of which model runs: it is handed a function
``fn(params, block, start) -> stats`` and a ``merge(a, b)`` (by default the
statistics' own ``a.merge(b)``); only ``params`` travel to the chunks and only
the (small) statistics come back.

Scheduling:

* default: Dask's in-process threaded scheduler, no cluster to start;
* ``scheduler="tcp://host:port"`` connects a ``distributed.Client`` for the
  engine's lifetime;
* ``scheduler=<distributed.Client>``, or an active default client, uses it.

Reduction is a fixed-shape tree over the chunks in plan order, never in
completion order, so results do not depend on the number of workers or on
timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError
from functools import partial

import dask
import dask.local
import dask.threaded
import numpy as np
import scipy.sparse
from dask import delayed
from dask.callbacks import Callback
from threadpoolctl import ThreadpoolController

from ..exceptions import ClusterError, DataError
from ..io.base import Source

#: Partial results merged by one reduction task.
FAN_IN = 8

_LOCAL_SCHEDULERS = ("threads", "synchronous", "sync")


_BLAS = {}


def _blas_controller() -> ThreadpoolController:
    """One controller per process: building one scans the loaded libraries (~1.5 ms)."""
    if "controller" not in _BLAS:
        _BLAS["controller"] = ThreadpoolController()
    return _BLAS["controller"]


class _OneBlasThread:
    """A context in which BLAS uses one thread, safe to enter from several threads at once:
    the first to enter sets the limit, the last to leave restores it.

    For small products (a micro-batch of records): OpenBLAS's threads cost more than
    they give there, and spin against the caller's own threads (a server's pool):
    scoring ran 4x slower with two BLAS threads on a busy 2-core machine.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users, self._limit = 0, None

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                self._limit = _blas_controller().limit(limits=1, user_api="blas")
            self._users += 1

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._limit.restore_original_limits()


one_blas_thread = _OneBlasThread()


def _fan_in(level, node):
    """The root of the fixed merge tree over ``level``, in order, FAN_IN parts a node.

    ``node(parts, (depth, i))`` makes one node; the tree's shape depends only
    on ``len(level)``, so results do not depend on the scheduler.
    """
    depth = 0
    while len(level) > 1:
        level = [node(level[i : i + FAN_IN], (depth, i)) for i in range(0, len(level), FAN_IN)]
        depth += 1
    return level[0]


def merge_stats(a, b):
    """The default merge: the statistics' own ``a.merge(b)`` (module level: it pickles)."""
    return a.merge(b)


def _merge_all(merge, *parts):
    result = parts[0]
    for part in parts[1:]:
        result = merge(result, part)
    return result


class BlockCache:
    """Decoded blocks of one source, kept across passes (in-process scheduler only).

    Tasks of the threaded scheduler share this object, so the first pass fills
    it and later passes read memory instead of files. The blocks live in one
    buffer for the whole source, allocated once: kept in the allocator's
    per-thread arenas instead, long-lived blocks made every later temporary
    fault in fresh pages, and cached passes ran slower than reading the files.
    """

    def __init__(self, source):
        # Row-major, as the compiled loops read rows: the transposing copy from
        # decoded (column-major) Parquet is paid once, in the first pass.
        self.buffer = np.empty((source.n_rows, source.n_features), dtype=source.dtype)
        self.blocks: dict = {}

    def read(self, source, chunk, payload):
        blocks = self.blocks.get(chunk.index)
        if blocks is None:
            blocks = []
            for start, block, weights in _blocks(source, chunk, payload):
                view = self.buffer[start : start + block.shape[0]]
                view[...] = block
                blocks.append((start, view, weights))
            self.blocks[chunk.index] = blocks
        return blocks


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


#: With ``cache="auto"``, cache a source whose decoded size is below this share
#: of the available memory.
CACHE_SHARE = 0.5


def _blocks(source, chunk, payload):
    """``(start, block, weights)`` of one chunk; ``weights`` is None for unweighted rows."""
    weights = source.chunk_weights(chunk, payload)
    for start, block in source.read_chunk(chunk, payload):
        offset = start - chunk.start
        yield start, block, None if weights is None else \
            weights[offset : offset + block.shape[0]]


@dataclasses.dataclass(frozen=True)
class ChunkGroup:
    """Chunks that one task reads together: their rows are gathered into one block.

    For algorithms whose steps must see rows from several places of the data
    at once (mini-batches drawn across chunks of sorted data). The chunk
    function then gets, instead of the block's first row, the global index of
    every row of the gathered block.
    """

    chunks: tuple

    @property
    def index(self) -> int:
        return self.chunks[0].index

    @property
    def n_rows(self) -> int:
        return sum(chunk.n_rows for chunk in self.chunks)


def _members(chunk) -> tuple:
    return chunk.chunks if isinstance(chunk, ChunkGroup) else (chunk,)


def _read(source, chunk, payload, cache):
    if isinstance(chunk, ChunkGroup):
        return [_gather(source, chunk, payload, cache)]
    if isinstance(cache, _Decoded):  # the worker's cached copy of this chunk
        return cache.blocks
    return cache.read(source, chunk, payload) if cache is not None else \
        _blocks(source, chunk, payload)


def _gather(source, group, payloads, cache):
    """``(rows, block, weights)``: the blocks of a group's chunks, in the group's order."""
    parts = [part for chunk, payload in zip(group.chunks, payloads or [None] * len(group.chunks),
                                            strict=True)
             for part in _read(source, chunk, payload, cache)]
    rows = np.concatenate([np.arange(start, start + block.shape[0]) for start, block, _ in parts])
    blocks = [block for _, block, _ in parts]
    block = scipy.sparse.vstack(blocks, format="csr") if scipy.sparse.issparse(blocks[0]) else \
        np.concatenate(blocks)
    weights = None if parts[0][2] is None else np.concatenate([w for _, _, w in parts])
    return rows, block, weights


def _decode(source, chunk, payload):
    """A chunk's ``(start, block, weights)`` list: what a worker keeps in its cache."""
    return list(_blocks(source, chunk, payload))


class _Decoded:
    """A chunk's decoded blocks, already on the worker (from a worker-cache future)."""

    def __init__(self, blocks):
        self.blocks = blocks


def _call(fn, params, block, start, weights):
    """A chunk function on one block: weighted rows add their weights as a 4th argument."""
    if weights is None:
        return fn(params, block, start)
    return fn(params, block, start, weights)


def all_finite(value) -> bool:
    """Whether every float in ``value`` (statistics: arrays, numbers, dataclasses,
    named tuples, lists, dicts) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
    if isinstance(value, np.generic):
        return all_finite(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(all_finite(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, list | tuple):
        return all(all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    return True


def _overflow_error(fn, params, source, chunk, block, start, weights=None):
    """The DataError naming the row (and its largest value) whose statistics overflow.

    Statistics of rows are independent, so halving the block finds the first
    row whose statistics alone are not finite; rows that only overflow
    together (a huge sum) are named by the largest value of the block.
    """
    def finite(a, b):
        rows = start[a:b] if np.ndim(start) else start + a
        return all_finite(_call(fn, params, block[a:b], rows,
                                None if weights is None else weights[a:b]))

    low, high = 0, block.shape[0]
    while high - low > 1:
        middle = (low + high) // 2
        if finite(low, middle):
            low = middle
        else:
            high = middle
    if finite(low, high):
        low = int(np.argmax(np.abs(block).max(axis=1)))
    column = int(np.argmax(np.abs(block[low])))
    names = source.feature_names
    row = int(start[low]) if np.ndim(start) else start + low  # a gathered group: its rows
    holder = next(c for c in _members(chunk) if c.start <= row < c.start + c.n_rows)
    return DataError(
        f"value {block[low, column]:g} makes the statistics overflow (squares of values "
        "beyond about 1e154 leave the float range); scale this column or remove the row",
        **source.locate(holder, row), column=names[column] if names else column, row=row)


def _dask_input(source, chunk):
    """What a task's chunk (or group of chunks) computes from, for Dask-collection sources."""
    if isinstance(chunk, ChunkGroup):
        inputs = [source.dask_input(member) for member in chunk.chunks]
        return None if inputs[0] is None else inputs
    return source.dask_input(chunk)


def _chunk_task(fn, params, source, chunk, payload, cache=None, *, merge, finite=False):
    """Read one chunk block by block and fold ``fn`` over the blocks.

    With ``finite``, statistics that are not finite (finite data whose
    arithmetic overflowed) are a DataError naming the file, row group, column
    and row.
    """
    result = None
    for start, block, weights in _read(source, chunk, payload, cache):
        part = _call(fn, params, block, start, weights)
        if finite and not all_finite(part):
            raise _overflow_error(fn, params, source, chunk, block, start, weights)
        result = part if result is None else merge(result, part)
    return result


def _map_task(fn, params, source, chunk, payload, cache=None):
    """``fn`` over one chunk, its per-block results concatenated in row order."""
    parts = [fn(params, block, start) for start, block, _ in _read(source, chunk, payload, cache)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _sink_task(fn, params, source, chunk, payload, cache=None, *, sink):
    """``fn`` over one chunk, handed with the chunk to ``sink``; what ``sink`` returns."""
    return sink(source, chunk, _map_task(fn, params, source, chunk, payload, cache))


#: Seconds to wait for a scheduler to answer before giving up.
CONNECT_TIMEOUT = 10


def connect(address: str):
    """A ``distributed.Client`` of the scheduler at ``address``, or a ClusterError in seconds.

    The address is checked first (``tcp://host:port``, ``tls://``, ``ws://``,
    ``wss://``; no scheme means ``tcp``) and its host name resolved, so a
    typing error fails at once instead of after the client's retries.
    """
    import socket

    from distributed import Client
    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls", "ws", "wss"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        host, port = parse_host_port(location)
        socket.getaddrinfo(host, port)
    except (ValueError, TypeError, OSError) as exc:
        raise ClusterError(f"{address!r} is not a reachable Dask scheduler address ({exc}); "
                           "expected e.g. tcp://10.0.0.5:8786") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"no Dask scheduler answered at {address} within "
                           f"{CONNECT_TIMEOUT} s ({type(exc).__name__})") from None


def _default_client():
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


class Engine:
    """Where and how chunk tasks run.

    Parameters
    ----------
    scheduler : None, str or distributed.Client
        ``None`` uses an active ``distributed`` default client if there is one,
        else the in-process threaded scheduler. ``"threads"`` or
        ``"synchronous"`` force a local scheduler. A ``"tcp://host:port"``
        address connects to that cluster. A ``Client`` is used as it is.
    n_workers : int, optional
        Threads of the in-process scheduler (default: the number of cores).
    checkpoint : Checkpoint, optional
        Journal every pass outside iteration loops into it, and replay
        journaled passes instead of computing them again.
    progress : bool
        Show a progress bar on stderr for each data pass (chunks and rows/s).
    cache : "auto", bool
        Keep decoded chunks of files in memory across passes, so iterations
        after the first do not read again. ``"auto"``: when the decoded data
        takes less than half the available memory. In-process scheduler only
        (on a cluster, Dask workers keep their own memory).

    Use it as a context manager: a client it connected is closed at the end,
    and for the whole session BLAS runs one thread per engine thread (with
    several threads, or a cluster).
    """

    def __init__(self, scheduler=None, n_workers: int | None = None, *, checkpoint=None,
                 progress: bool = False, cache="auto"):
        self.checkpoint = checkpoint
        self.cache = cache
        self._caches: dict = {}
        self._worker_caches: dict = {}  # per source: chunk index -> future of decoded blocks
        self.progress = progress
        self.passes = 0
        self._stage = None  # [name, passes so far, passes expected or None]: see stage()
        self._owned_client = None
        self.n_workers = n_workers or os.cpu_count() or 1
        if scheduler is None:
            self.client = _default_client()
        elif isinstance(scheduler, str) and scheduler in _LOCAL_SCHEDULERS:
            self.client = None
        elif isinstance(scheduler, str):
            self.client = self._owned_client = connect(scheduler)
        else:
            self.client = scheduler
        self._local = "synchronous" if scheduler in ("synchronous", "sync") else "threads"
        self._shipped = {}
        self._session_blas = None  # the BLAS pin of a ``with`` session

    def __enter__(self):
        # BLAS limited for the whole session, not only during passes: BLAS
        # threads woken by the small matrix work between passes (M-steps,
        # seeding) spin for a while after each call, and took a core from the
        # next pass (EM iterations were 15-30 % slower).
        self._session_blas = self._blas_limit()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._worker_caches.clear()  # the futures go: the workers free the cached chunks
        if self._session_blas is not None:
            self._session_blas.restore_original_limits()
            self._session_blas = None
        if self._owned_client is not None:
            self._owned_client.close()
            self._owned_client = None

    def _address(self):
        try:
            return self.client.scheduler.address
        except AttributeError:
            return "?"

    @property
    def distributed(self) -> bool:
        return self.client is not None

    @property
    def parallelism(self) -> int:
        """How many chunk tasks can run at once (threads, or all workers' threads)."""
        if not self.distributed:
            return 1 if self._local == "synchronous" else self.n_workers
        workers = self.client.scheduler_info().get("workers", {})
        return max(1, sum(w.get("nthreads", 1) for w in workers.values()))

    # -- graph building -------------------------------------------------
    def _source_input(self, source: Source):
        """The source as a graph input: shipped once per engine, not once per task."""
        token = id(source)
        if token not in self._shipped:
            if self.distributed and source.in_memory:
                # Rows already on the client go to the cluster once, not every pass.
                self._shipped[token] = (source, self.client.scatter(source, broadcast=True))
            else:
                self._shipped[token] = (source, delayed(source, name=f"source-{uuid.uuid4().hex}"))
        return self._shipped[token][1]

    def _cache_for(self, source):
        """The block cache of ``source``, or None when it is not to be cached."""
        if self.cache is False or self.distributed or source.in_memory:
            return None
        token = id(source)
        if token not in self._caches:
            decoded = source.n_rows * source.n_features * np.dtype(source.dtype).itemsize
            wanted = self.cache is True or decoded < CACHE_SHARE * available_memory()
            self._caches[token] = (source, BlockCache(source) if wanted else None)
        return self._caches[token][1]

    def _worker_cache(self, source):
        """On a cluster: futures of the decoded chunks, kept in the workers' memory.

        Wanted when ``cache`` is True, or "auto" and the decoded data takes less
        than ``CACHE_SHARE`` of the workers' memory limits together. A chunk is
        decoded by the first pass that needs it, on the worker it is dealt to,
        and stays there: later tasks on it are sent where it is (``_holders``).
        A worker that dies loses its chunks; Dask decodes them again from
        storage on another worker, from the same task. Groups of chunks
        (mini-batch windows) are not cached: they are read at every step.
        """
        if self.cache is False or source.in_memory or not self.distributed:
            return None
        token = id(source)
        if token not in self._worker_caches:
            decoded = source.n_rows * source.n_features * np.dtype(source.dtype).itemsize
            limits = [w.get("memory_limit") or 0 for w in
                      self.client.scheduler_info().get("workers", {}).values()]
            wanted = self.cache is True or (all(limits) and decoded < CACHE_SHARE * sum(limits))
            self._worker_caches[token] = (source, {} if wanted else None)
        return self._worker_caches[token][1]

    def _decoded(self, source, source_in, chunk, futures, workers):
        """The future of a chunk's decoded blocks, made by the first pass that reads it.

        Chunks are dealt to the workers in turn (loosely: a busy or dead worker's
        share goes elsewhere): left to themselves, the decode tasks all follow
        their one small input, the source, to a single worker.
        """
        if chunk.index not in futures:
            task = delayed(_decode, pure=True, name="decode")(
                source_in, chunk, _dask_input(source, chunk),
                dask_key_name=(f"decoded-{id(source):x}-{uuid.uuid4().hex[:8]}", chunk.index))
            turn = [workers[len(futures) % len(workers)]] if workers else None
            futures[chunk.index] = self.client.compute(task, workers=turn,
                                                       allow_other_workers=True)
        return delayed(_Decoded)(futures[chunk.index])

    def _chunk_tasks(self, task, fn, params, source, chunks=None, *, lazy=False):
        """One task per chunk. ``lazy``: for a lazy result (not computed now), which
        uses chunks the workers already hold but decodes none into their cache."""
        name = f"chunks-{uuid.uuid4().hex}"
        params_in = delayed(params, name=f"params-{name}", traverse=False)
        source_in = self._source_input(source)
        cache = self._cache_for(source)
        futures = self._worker_cache(source)
        holders = self._holders(futures)
        chunks = source.plan() if chunks is None else chunks
        # the workers to deal new chunks to: asked only when some chunk is not held yet
        missing = futures is not None and not lazy and any(
            not isinstance(c, ChunkGroup) and c.index not in futures for c in chunks)
        workers = sorted(self.client.scheduler_info().get("workers", {})) if missing else []
        tasks = []
        for chunk in chunks:
            held, payload = cache, _dask_input(source, chunk)
            if futures is not None and not isinstance(chunk, ChunkGroup) and (
                    not lazy or chunk.index in futures):
                held, payload = self._decoded(source, source_in, chunk, futures, workers), None
            where = holders.get(getattr(chunk, "index", None))
            # On the worker that holds the chunk (else anywhere: it may have died).
            with dask.annotate(workers=where, allow_other_workers=True) if where else \
                    contextlib.nullcontext():
                # Named: otherwise Dask hashes the (partial) function on every pass.
                tasks.append(delayed(task, pure=True, name="chunk-task")(
                    fn, params_in, source_in, chunk, payload, held,
                    dask_key_name=(name, chunk.index)))
        return tasks

    def _holders(self, futures) -> dict:
        """Chunk index -> the workers holding its decoded blocks (cached chunks only)."""
        if not futures:
            return {}
        done = {index: f for index, f in futures.items() if f.status == "finished"}
        who = self.client.who_has(list(done.values())) if done else {}
        return {index: list(who.get(f.key, ())) for index, f in done.items()
                if who.get(f.key)}

    def _compute(self, *objects):
        if self.distributed:
            try:
                return tuple(self.client.compute(list(objects), sync=True))
            except (OSError, TimeoutError, CancelledError) as exc:
                if self.client.status == "running" and not isinstance(exc, CancelledError):
                    raise  # an IO error of the task itself, not of the cluster
                cause = " ".join(str(exc).split())[:160]  # one line
                raise ClusterError(
                    f"lost the Dask scheduler at {self._address()} ({type(exc).__name__}: "
                    f"{cause}); re-run the same fit with its checkpoint directory to continue "
                    "from the last completed iteration") from None
        with self._blas_limit():
            return dask.compute(*objects, scheduler=self._local, num_workers=self.n_workers)

    def _blas_limit(self):
        # One BLAS thread per Dask thread: the threads already fill the cores.
        limit = 1 if self._local == "threads" and self.n_workers > 1 else None
        return _blas_controller().limit(limits=limit, user_api="blas")

    def _local_graph(self, task, fn, params, source, chunks):
        """Chunk tasks as a plain task dict for the in-process scheduler.

        Building ``delayed`` objects costs about 10 ms a pass (Dask traverses
        and tokenizes every argument); a dict of bound calls costs well under
        1 ms, which matters when a pass itself takes 20 ms. Each call is bound
        with ``partial`` so that Dask does not look inside the arguments.
        """
        name = f"chunks-{uuid.uuid4().hex}"
        cache = self._cache_for(source)
        graph, keys, merged = {}, [], set()
        for chunk in chunks:
            call = partial(task, fn, params, source, chunk, cache=cache)
            inputs = [source.dask_input(member) for member in _members(chunk)]
            payload = None
            if inputs[0] is not None:  # the chunk comes out of a Dask collection's own task
                for item in inputs:
                    if id(item.dask) not in merged:
                        merged.add(id(item.dask))
                        graph.update(item.dask)
                payload = [item.key for item in inputs]
                payload = payload if isinstance(chunk, ChunkGroup) else payload[0]
            keys.append((name, chunk.index))
            graph[keys[-1]] = (call, payload)
        return graph, keys

    def _local_get(self, graph, keys):
        get = dask.local.get_sync if self._local == "synchronous" else partial(
            dask.threaded.get, num_workers=self.n_workers)
        with self._blas_limit():
            return get(graph, keys)

    # -- public operations ----------------------------------------------
    def map_reduce(self, fn: Callable, params, source: Source, merge: Callable = merge_stats,
                   *, chunks=None, finite=True):
        """``merge`` of ``fn(params, block, start)`` over every block of ``source``.

        ``merge`` defaults to the statistics' own ``merge`` method; results that
        are plain numbers or arrays pass ``operator.add``.

        When the source's rows carry weights, the call is ``fn(params, block,
        start, weights)``: a chunk function used on weighted data takes them.

        Each chunk (of ``chunks``, default the whole plan) is read exactly once;
        an item of ``chunks`` may be a :class:`ChunkGroup`, read by one task as
        one gathered block.
        The merge tree has a fixed shape in chunk order, so the result is the
        same on any scheduler. With ``finite`` (the default, for fits), a
        block whose statistics are not finite is a DataError naming where;
        passes that score new data (where -inf is an answer) turn it off.
        """
        journal = self.checkpoint if self.checkpoint and self.checkpoint.journaling else None
        if journal is not None:
            recorded, result = journal.replay_pass()
            if recorded:
                return result
        plan = source.plan() if chunks is None else chunks
        task = partial(_chunk_task, merge=merge, finite=finite)
        with self._progress_bar(plan):
            if self.distributed:
                result = self._reduce(self._chunk_tasks(task, fn, params, source, plan), merge)
            else:
                result = self._local_reduce(*self._local_graph(task, fn, params, source, plan),
                                            merge)
        if journal is not None:
            journal.record_pass(result)
        return result

    @contextlib.contextmanager
    def stage(self, name: str, passes: int | None = None):
        """Name the data passes made inside: their progress bars read ``"{name} pass
        i/{passes}"`` (or ``"{name} pass i"`` when their number is not known ahead).

        The caller says what the passes are for (``"initialisation: k-means||"``);
        the engine only counts them. Stages nest: the innermost names a pass.

        Parameters
        ----------
        name : str
            What the passes do, as the user should read it.
        passes : int, optional
            How many passes the stage makes, when known.
        """
        outer, self._stage = self._stage, [name, 0, passes]
        try:
            yield
        finally:
            self._stage = outer

    def _pass_name(self) -> str:
        """The name of the pass starting now (and count it in its stage)."""
        if self._stage is None:
            return f"pass {self.passes}"
        self._stage[1] += 1
        name, done, expected = self._stage
        return f"{name} pass {done}" + (f"/{expected}" if expected else "")

    @contextlib.contextmanager
    def _progress_bar(self, chunks):
        """A bar that advances as chunk tasks finish (whole pass at once on a cluster)."""
        self.passes += 1
        desc = self._pass_name()
        if not self.progress:
            yield
            return
        from tqdm.auto import tqdm

        rows = sum(c.n_rows for c in chunks)
        bar = tqdm(total=rows, desc=desc, unit="row", unit_scale=True,
                   leave=False, file=sys.stderr, dynamic_ncols=True,
                   postfix=f"chunks 0/{len(chunks)}")
        sizes = {chunk.index: chunk.n_rows for chunk in chunks}
        done = [0]

        def finished(key, result, dsk, state, worker_id):
            if isinstance(key, tuple) and str(key[0]).startswith("chunks-"):
                done[0] += 1
                bar.set_postfix_str(f"chunks {done[0]}/{len(chunks)}", refresh=False)
                bar.update(sizes.get(key[1], 0))

        try:
            if self.distributed:
                yield
                bar.update(rows - bar.n)
            else:
                with Callback(posttask=finished):
                    yield
        finally:
            bar.close()

    def _reduce(self, level, merge):
        name = f"merge-{uuid.uuid4().hex}"
        (result,) = self._compute(_fan_in(level, lambda parts, key: delayed(
            _merge_all, pure=True, name="merge-task")(merge, *parts,
                                                      dask_key_name=(name, *key))))
        return result

    def _local_reduce(self, graph, level, merge):
        """The same fan-in tree as :meth:`_reduce`, on the plain task dict."""
        name = f"merge-{uuid.uuid4().hex}"
        combine = partial(_merge_all, merge)

        def node(parts, key):
            graph[(name, *key)] = (combine, *parts)
            return (name, *key)

        return self._local_get(graph, _fan_in(level, node))

    def _map_chunks(self, fn, params, source, chunks, task=_map_task) -> list:
        """``fn`` per chunk of ``chunks``, computed, as a list in their order."""
        if self.distributed:
            return list(self._compute(*self._chunk_tasks(task, fn, params, source, chunks)))
        return list(self._local_get(*self._local_graph(task, fn, params, source, chunks)))

    def map_to(self, fn: Callable, params, source: Source, sink: Callable) -> list:
        """``sink(source, chunk, result)`` of ``fn``'s result on each chunk, in the chunk's
        own task (on a cluster: the worker that read it), so that per-row results go
        straight to their destination; the sinks' (small) returns, in chunk order."""
        plan = source.plan()
        with self._progress_bar(plan):
            return self._map_chunks(fn, params, source, plan, partial(_sink_task, sink=sink))

    def map_blocks(self, fn: Callable, params, source: Source) -> list:
        """``fn(params, block, start)`` per chunk, as a list in chunk order (computed)."""
        return self._map_chunks(fn, params, source, source.plan())

    def iter_map(self, fn: Callable, params, source: Source, *, window: int | None = None):
        """``fn`` per chunk, yielded in chunk order, computing ``window`` chunks at a time.

        Memory holds one window of results, whatever the size of the data.
        """
        plan = source.plan()
        window = window or 4 * self.parallelism
        for first in range(0, len(plan), window):
            chunks = plan[first : first + window]
            yield from zip(chunks, self._map_chunks(fn, params, source, chunks), strict=True)

    def per_row(self, fn: Callable, params, source: Source, *, width=None, dtype=None):
        """``fn``'s per-row results over ``source``: NumPy for in-memory input, else lazy Dask."""
        if source.in_memory:
            return np.concatenate(self.map_blocks(fn, params, source))
        return self.map_lazy(fn, params, source, width=width, dtype=dtype or source.dtype)

    def map_lazy(self, fn: Callable, params, source: Source, *, width: int | None, dtype):
        """``fn`` per chunk as one lazy Dask array of its results, concatenated by rows."""
        import dask.array as da

        parts = []
        tasks = self._chunk_tasks(_map_task, fn, params, source, lazy=True)
        for task, chunk in zip(tasks, source.plan(), strict=True):
            shape = (chunk.n_rows,) if width is None else (chunk.n_rows, width)
            parts.append(da.from_delayed(task, shape=shape, dtype=dtype))
        return da.concatenate(parts, axis=0)
