"""`Stream`: epoch-aware, shardable, reproducible batches over mlx-data.

A `Stream` owns the path from a list of samples to batches: the epoch's order, the rank's share,
the transforms in mlx-data worker threads, batching and prefetching. It follows the batch-source
protocol of `Trainer.fit` (`mlxkit.sources.BatchSource`: `iter`, `len`,
`set_epoch(epoch, start_batch=k)`, `shard`, `seed`, `replace`), and works as well in a plain
`for batch in stream` loop.

Each epoch builds this mlx-data pipeline (the MLX depth article's, made deterministic):

    buffer_from_vector(samples)               # once, in __init__
      .perm(order)                            # permutation of (seed, epoch), rank-strided, sliced
      .load_numpy / .load_image / ...         # BufferTransform: native code, no GIL
      .sample_transform(numpy transforms)     # Transform / functions; rng from (seed, epoch, index)
      .ordered_prefetch(prefetch * batch_size, num_threads)
      .batch(batch_size)                      # in the consuming thread

Choices, measured with mlx-data 0.1.0:

- `ordered_prefetch` returns samples in order whatever the thread timing, so a batch's contents
  depend only on (seed, epoch, batch number). The article's `to_stream().batch().prefetch()` mixes
  samples of neighbouring batches once two threads run (batch 0 of `range(200)` held
  `[0, 5, 14, 18, ...]`), which breaks exact resume.
- `Stream.prefetch` aborts the whole process (`std::terminate`) when a transform raises and the
  stream is then released; `ordered_prefetch` raises the error cleanly, so it is the only
  prefetch used here.
- Sample-level prefetch with batching in the consumer beat batch-level prefetch
  (`.batch().ordered_prefetch()`) by 20-30% on the depth pipeline.
- Skipping `k` batches slices the index list before anything is loaded.

Throughput, from `benchmarks/bench_data.py` (the depth pipeline: two `.npy` loads per sample, a
128x256x3 float32 image and a 128x256x1 depth map, then flip + translation + brightness + noise;
batch 16; Linux x86-64, 2 CPU cores shared with other jobs, page cache warm):

- CPU cost, which the machine's load does not change: 0.24 ms per sample to load, 1.4 ms with the
  augmentation. Worker threads add 3-8% to the synchronous path (`prefetch=0`).
- Threads: 2 threads gave 1.5-1.7x the samples/s of 1 (1090-1300 against 700-770, at a quiet
  moment); 4 threads on the 2 cores gave no more than 2. Hence one thread per core by default,
  `num_threads = min(8, os.cpu_count())`.
- Prefetch: with a consumer that spends 20 ms per batch (a training step that releases the GIL),
  `prefetch=0` serialises loading and compute (268 samples/s) while any `prefetch >= 1` overlaps
  them (335-386 on the loaded machine); deeper queues changed nothing measurable. Hence
  `prefetch=2` batches.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mlxkit._validation import check_int
from mlxkit.data.transforms import BufferTransform, Sample, Transform
from mlxkit.sources import check_shard, epoch_permutation, rank_share

import mlx.data as dx
import numpy as np

SampleFunction = Callable[[Sample], Sample]
TransformLike = Transform | SampleFunction

_INDEX = "__mlxkit_index__"
# Tells augmentation seeds apart from the [seed, epoch] that seeds the epoch's order.
_AUGMENT_TAG = 0x61756731
_DTYPES = tuple(np.dtype(t) for t in ("uint8", "int8", "int32", "int64", "float32", "float64"))

DEFAULT_THREADS = min(8, os.cpu_count() or 1)
DEFAULT_PREFETCH = 2


class Stream:
    """Batches of samples, in a fresh seeded order each epoch, through mlx-data worker threads.

    Every batch is a `dict[str, np.ndarray]` with one leading batch axis. The epoch's order is a
    pure function of `(seed, epoch)`, identical on every rank; random transforms draw from a
    generator seeded by `(seed, epoch, sample index)`; so a run resumed with
    `set_epoch(epoch, start_batch=k)` sees exactly the batches it would have seen, whatever the
    thread count.

    Iterating without calling `set_epoch` moves on to the next epoch each time, so a plain
    `for epoch ...: for batch in stream` loop reshuffles. `len(stream)` is the number of batches
    in a full epoch on this rank.

    Args:
        samples: A list of dicts (one per sample), or a dict of equal-length arrays or lists.
            Values are arrays, numbers, or file paths (`str` / `os.PathLike`) for a transform such
            as `LoadNumpy` or `LoadImage` to load.
        batch_size: Samples per batch.
        shuffle: Visit the samples in a fresh seeded order each epoch; `False` keeps their order.
        seed: Seeds the epoch order and the augmentation (a non-negative int).
        drop_last: Drop the last partial batch, so every batch has the same shape (compiled steps
            then never retrace). With `False`, the last batch of an epoch may be smaller.
            `Trainer.fit` follows this setting, whatever its own `drop_last` (which applies to
            arrays, and keeps the last batch by default, as Keras does).
        transforms: Applied to each sample in order: `Transform` objects (see `mlxkit.data`) or
            functions `sample -> sample`.
        prefetch: How many batches' worth of samples worker threads load and transform ahead of
            the consumer. 0 does all the work on demand in the calling thread (for debugging).
            In-memory samples without transforms are always gathered on demand: there is
            nothing to overlap.
        num_threads: Worker threads that load and transform samples.
        shard: `(rank, num_ranks)` for data-parallel training, e.g.
            `(group.rank(), group.size())`: each rank sees a disjoint, rank-strided
            `1 / num_ranks` of every epoch's order, and all ranks get the same number of batches
            (the remainder is dropped), so none waits alone in a collective. Under distributed
            training `Trainer.fit` trains an unsharded stream on a sharded copy
            (`replace(shard=...)`); a stream sharded here is used as it is.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import Stream
        >>> data = {"x": np.arange(10, dtype="float32")[:, None], "y": np.arange(10) % 2}
        >>> stream = Stream(data, batch_size=4, seed=0)
        >>> len(stream), [b["x"].shape for b in stream]
        (2, [(4, 1), (4, 1)])
        >>> stream.set_epoch(3, start_batch=1)
        >>> len(list(stream))
        1
    """

    def __init__(
        self,
        samples: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        transforms: Sequence[TransformLike] = (),
        prefetch: int = DEFAULT_PREFETCH,
        num_threads: int = DEFAULT_THREADS,
        shard: tuple[int, int] | None = None,
    ):
        check_int(batch_size, "batch_size")
        check_int(prefetch, "prefetch", minimum=0)
        check_int(num_threads, "num_threads")
        if not isinstance(shuffle, bool) or not isinstance(drop_last, bool):
            raise TypeError(
                "`shuffle` and `drop_last` must be bools. "
                f"Received: shuffle={shuffle!r}, drop_last={drop_last!r}"
            )
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.prefetch, self.num_threads = int(prefetch), int(num_threads)
        self.seed = seed

        self._records, self._text_keys = _as_records(samples)
        self._stages = _plan(transforms)
        self.transforms = tuple(transforms)
        if not self._stages and self._text_keys:
            raise ValueError(
                f"Keys {sorted(self._text_keys)} hold file paths or text, but no transform loads "
                "them, and a batch holds arrays only. Add a loading transform, for example "
                f"transforms=[LoadNumpy({sorted(self._text_keys)!r})]."
            )
        self.shard = shard
        records = self._records
        if self._stages:
            # The index lets worker threads seed augmentation and name a bad sample's files.
            records = [{**r, _INDEX: np.int64(i)} for i, r in enumerate(self._records)]
        self._buffer = dx.buffer_from_vector(records)  # type: ignore[attr-defined]
        self._reference: tuple[int, dict[str, tuple[tuple[int, ...], np.dtype]]] | None = None
        self._lock = threading.Lock()
        self._epoch, self._start_batch = 0, 0

    # ------------------------------------------------------------------ epoch and order
    @property
    def seed(self) -> int:
        """The seed of the epoch order and the augmentation."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        check_int(value, "seed", minimum=0)
        self._seed = int(value)

    @property
    def shard(self) -> tuple[int, int]:
        """`(rank, num_ranks)`: this rank's share of every epoch; `(0, 1)` when not sharded."""
        return self._shard

    @shard.setter
    def shard(self, value: tuple[int, int] | None) -> None:
        rank, num_ranks = check_shard(value)
        count = len(self._records)
        if count < num_ranks:
            raise ValueError(
                f"There are fewer samples ({count}) than ranks (shard={value!r}): some ranks "
                "would get no data."
            )
        per_rank = count // num_ranks
        if self.drop_last and per_rank < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the {per_rank} samples each rank "
                "sees per epoch, so with drop_last=True an epoch has no batch. Lower batch_size "
                "or pass drop_last=False."
            )
        self._shard = (rank, num_ranks)

    def replace(self, *, seed: int | None = None, shard: tuple[int, int] | None = None) -> Stream:
        """A copy of this stream with another `seed` and/or `shard`; this one is left unchanged.

        The copy shares the samples and the mlx-data buffer, so it costs nothing to make.

        Example:
            >>> import numpy as np
            >>> from mlxkit.data import Stream
            >>> stream = Stream({"i": np.arange(8)}, batch_size=2, seed=0)
            >>> view = stream.replace(seed=3, shard=(1, 2))
            >>> (stream.seed, stream.shard), (view.seed, view.shard), len(view)
            ((0, (0, 1)), (3, (1, 2)), 2)
        """
        view = copy.copy(self)
        if seed is not None:
            view.seed = seed
        if shard is not None:
            view.shard = shard
        return view

    @property
    def epoch(self) -> int:
        """The epoch that the next iteration yields."""
        return self._epoch

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        """Fixes the epoch that the next iteration yields, skipping its first `start_batch` batches.

        Skipped batches are never loaded: the epoch's index list is sliced before the pipeline
        is built.

        Example:
            >>> import numpy as np
            >>> from mlxkit.data import Stream
            >>> stream = Stream({"i": np.arange(8)}, batch_size=2)
            >>> stream.set_epoch(5)
            >>> full = [b["i"].tolist() for b in stream]
            >>> stream.set_epoch(5, start_batch=3)
            >>> [b["i"].tolist() for b in stream] == full[3:]
            True
        """
        check_int(epoch, "epoch", minimum=0)
        check_int(start_batch, "start_batch", minimum=0)
        if start_batch > len(self):
            raise ValueError(
                f"`start_batch` must be at most the {len(self)} batches of an epoch. "
                f"Received: start_batch={start_batch}"
            )
        self._epoch, self._start_batch = int(epoch), int(start_batch)

    def indices(self, epoch: int) -> np.ndarray:
        """The sample indices this rank visits in `epoch`, in order (dropped samples left out).

        Example:
            >>> import numpy as np
            >>> from mlxkit.data import Stream
            >>> ranks = [Stream({"i": np.arange(10)}, batch_size=2, shard=(r, 2)) for r in (0, 1)]
            >>> a, b = (s.indices(0) for s in ranks)
            >>> len(a), len(b), len(set(a) | set(b))
            (4, 4, 8)
        """
        check_int(epoch, "epoch", minimum=0)
        count = len(self._records)
        if self.shuffle:
            order = epoch_permutation(count, self.seed, int(epoch))
        else:
            order = np.arange(count)
        order = order[rank_share(count, *self.shard)]
        if self.drop_last:
            order = order[: (len(order) // self.batch_size) * self.batch_size]
        return order

    def _per_rank(self) -> int:
        """Samples this rank is given per epoch before the last partial batch is dropped."""
        return len(self._records) // self.shard[1]

    def __len__(self) -> int:
        count = self._per_rank()
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        epoch, start_batch = self._epoch, self._start_batch
        self._epoch, self._start_batch = epoch + 1, 0
        order = self.indices(epoch)[start_batch * self.batch_size :]
        if len(order) == 0:
            return iter(())
        buffer = self._buffer.perm(order.tolist())
        last = len(self._stages) - 1
        for number, stage in enumerate(self._stages):
            if isinstance(stage, BufferTransform):
                buffer = stage.apply(buffer)
            else:
                run = self._python_stage(stage, epoch, number, finish=number == last)
                buffer = buffer.sample_transform(run)
        if self.prefetch == 0 or not self._stages:
            # Nothing to overlap: in-memory samples are gathered on demand (~700k samples/s).
            return iter(buffer.batch(self.batch_size).to_stream())
        window = max(self.prefetch * self.batch_size, 2 * self.num_threads)
        return iter(buffer.ordered_prefetch(window, self.num_threads).batch(self.batch_size))

    def _python_stage(
        self, functions: list[TransformLike], epoch: int, number: int, *, finish: bool
    ) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """One `sample_transform` callback: runs `functions` in order on one sample."""
        seed = self.seed
        needs_rng = any(isinstance(f, Transform) for f in functions)

        def run(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            index = int(sample.pop(_INDEX))
            views = {key: _read_only(value) for key, value in sample.items()}
            # mlx-data cannot wrap read-only memory: untouched inputs go back as the originals.
            originals = {id(views[key]): value for key, value in sample.items()}
            sample = views
            rng: Any = (
                np.random.default_rng([seed, epoch, index, number, _AUGMENT_TAG])
                if needs_rng
                else None
            )
            for function in functions:
                try:
                    result = (
                        function(sample, rng)
                        if isinstance(function, Transform)
                        else function(sample)
                    )
                except ValueError as error:
                    if "read-only" not in str(error):
                        raise
                    raise ValueError(
                        f"Transform {_name(function)} modified an input array in place ({error}). "
                        "Inputs are read-only because they may alias the dataset: return new "
                        "arrays instead (x = x + 1, not x += 1)."
                    ) from error
                if not isinstance(result, Mapping):
                    raise TypeError(
                        f"Transform {_name(function)} must return a dict of arrays. "
                        f"Received: {type(result).__name__}"
                    )
                sample = result
            out = {
                key: _to_array(originals.get(id(value), value), key, functions)
                for key, value in sample.items()
            }
            if finish:
                self._check_sample(out, index)
            else:
                out[_INDEX] = np.int64(index)
            return out

        return run

    def _check_sample(self, sample: dict[str, np.ndarray], index: int) -> None:
        """Stops text and mismatched shapes from reaching `batch`, which would pad them silently."""
        for key in self._text_keys & sample.keys():
            value = sample[key]
            if value.dtype == np.int8 and value.tobytes() == self._records[index][key]:
                raise ValueError(
                    f"Key {key!r} of sample {index} still holds the text "
                    f"{self._records[index][key].decode(errors='replace')!r} after the transforms, "
                    "and a batch holds arrays only. Load it (LoadNumpy, LoadImage) or drop the key "
                    "in a transform."
                )
        signature = {key: (value.shape, value.dtype) for key, value in sample.items()}
        if self._reference is None:
            with self._lock:
                if self._reference is None:
                    self._reference = (index, signature)
        reference_index, reference = self._reference
        if signature == reference:
            return
        if signature.keys() != reference.keys():
            raise ValueError(
                f"Sample {index}{self._describe(index)} has keys {sorted(signature)} after the "
                f"transforms, but sample {reference_index} had {sorted(reference)}. Every sample "
                "of a batch needs the same keys."
            )
        key = next(k for k in sorted(signature) if signature[k] != reference[k])
        (shape, dtype), (expected_shape, expected_dtype) = signature[key], reference[key]
        raise ValueError(
            f"Sample {index}{self._describe(index)} has {key!r} of shape {shape} and dtype "
            f"{dtype} after the transforms, but sample {reference_index}"
            f"{self._describe(reference_index)} had shape {expected_shape} and dtype "
            f"{expected_dtype}. Samples of a batch must match (mlx-data would pad them silently): "
            "resize or crop them to one size in a transform."
        )

    def _describe(self, index: int) -> str:
        texts = {key: self._records[index][key] for key in sorted(self._text_keys)}
        if not texts:
            return ""
        return (
            " (" + ", ".join(f"{k}={v.decode(errors='replace')!r}" for k, v in texts.items()) + ")"
        )

    def __repr__(self) -> str:
        return (
            f"Stream(num_samples={len(self._records)}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle}, seed={self.seed}, shard={self.shard}, "
            f"transforms={list(self.transforms)!r})"
        )


def _plan(transforms: Sequence[TransformLike]) -> list[BufferTransform | list[TransformLike]]:
    """Groups consecutive NumPy transforms into one `sample_transform` call (one GIL round trip)."""
    if isinstance(transforms, (Transform, str)) or callable(transforms):
        raise TypeError(
            f"`transforms` must be a list of transforms. Received: transforms={transforms!r}"
        )
    stages: list[BufferTransform | list[TransformLike]] = []
    for position, transform in enumerate(transforms):
        if isinstance(transform, BufferTransform):
            stages.append(transform)
        elif isinstance(transform, Transform) or callable(transform):
            if not stages or isinstance(stages[-1], BufferTransform):
                stages.append([])
            stages[-1].append(transform)  # type: ignore[union-attr]
        else:
            raise TypeError(
                f"transforms[{position}] must be a Transform or a function sample -> sample. "
                f"Received: {transform!r}"
            )
    if stages and isinstance(stages[-1], BufferTransform):
        stages.append([])  # a final NumPy pass checks shapes before batching
    return stages


def _name(function: Any) -> str:
    if isinstance(function, Transform):
        return type(function).__name__
    return getattr(function, "__qualname__", repr(function))


def _read_only(value: np.ndarray) -> np.ndarray:
    # mlx-data hands out arrays that alias the source samples; an in-place edit would corrupt them.
    view = value.view()
    view.flags.writeable = False
    return view


def _to_array(value: Any, key: str, functions: Sequence[Any]) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype not in _DTYPES:
        names = [_name(f) for f in functions]
        raise TypeError(
            f"Key {key!r} has dtype {array.dtype} after transforms {names}, which mlx-data cannot "
            f"hold. Supported: {[str(d) for d in _DTYPES]}; cast it (e.g. .astype('float32'))."
        )
    # A slice of a read-only input is read-only too, and mlx-data needs writable C-ordered memory.
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = array.copy(order="C")
    return array


def _as_records(samples: Any) -> tuple[list[dict[str, Any]], set[str]]:
    """Validates `samples`; returns one dict per sample (arrays or path bytes) and the text keys."""
    if isinstance(samples, Mapping):
        records = _records_from_columns(samples)
    elif isinstance(samples, Sequence) and not isinstance(samples, (str, bytes)):
        if len(samples) == 0:
            raise ValueError("`samples` is empty: a Stream needs at least one sample.")
        records = []
        for index, sample in enumerate(samples):
            if not isinstance(sample, Mapping):
                raise TypeError(
                    "`samples` must be a list of dicts or a dict of arrays. "
                    f"Received: samples[{index}] of type {type(sample).__name__}"
                )
            records.append({key: _value(v, key, index) for key, v in sample.items()})
    else:
        raise TypeError(
            "`samples` must be a list of dicts or a dict of equal-length arrays or lists. "
            f"Received: {type(samples).__name__}"
        )

    first = records[0]
    if not first:
        raise ValueError("`samples[0]` has no keys: a sample needs at least one array or path.")
    for key in first:
        if not isinstance(key, str) or key.startswith("__mlxkit"):
            raise ValueError(
                f"Sample keys must be strings not starting with '__mlxkit'. Received: {key!r}"
            )
    text_keys = {key for key, value in first.items() if isinstance(value, bytes)}
    signature = {key: _signature(value) for key, value in first.items()}
    for index, record in enumerate(records):
        if record.keys() != first.keys():
            raise ValueError(
                f"Every sample needs the same keys: samples[0] has {sorted(first)} but "
                f"samples[{index}] has {sorted(record)}."
            )
        for key, value in record.items():
            if _signature(value) != signature[key]:
                raise ValueError(
                    f"samples[{index}][{key!r}] is {_describe_value(value)} but "
                    f"samples[0][{key!r}] is {_describe_value(first[key])}; every sample's "
                    f"{key!r} needs the same shape and dtype."
                )
    return records, text_keys


def _records_from_columns(columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not columns:
        raise ValueError("`samples` is an empty dict: a Stream needs at least one key.")
    converted: dict[str, Any] = {}
    for key, column in columns.items():
        if isinstance(column, (str, bytes)) or not hasattr(column, "__len__"):
            raise TypeError(
                f"`samples[{key!r}]` must be an array or a list with one entry per sample. "
                f"Received: {type(column).__name__}"
            )
        if isinstance(column, (list, tuple)):
            converted[key] = column
        else:
            array = np.asarray(column)
            if array.ndim == 0:
                raise ValueError(
                    f"`samples[{key!r}]` needs a leading sample axis. Received: shape {array.shape}"
                )
            converted[key] = _checked_array(array, f"samples[{key!r}]")
    lengths = {key: len(column) for key, column in converted.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"The entries of `samples` must have the same length (one per sample). "
            f"Received lengths: {lengths}"
        )
    count = next(iter(lengths.values()))
    if count == 0:
        raise ValueError("`samples` is empty: a Stream needs at least one sample.")
    return [
        {
            key: column[i] if isinstance(column, np.ndarray) else _value(column[i], key, i)
            for key, column in converted.items()
        }
        for i in range(count)
    ]


def _value(value: Any, key: str, index: int) -> Any:
    if isinstance(value, (str, os.PathLike)):
        return os.fsencode(value)
    if isinstance(value, bytes):
        return value
    return _checked_array(np.asarray(value), f"samples[{index}][{key!r}]")


def _checked_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype not in _DTYPES:
        raise TypeError(
            f"`{where}` has dtype {array.dtype}, which mlx-data cannot hold. "
            f"Supported: {[str(d) for d in _DTYPES]}; cast it first (e.g. .astype('float32'))."
        )
    # np.ascontiguousarray would turn a 0-d array into shape (1,).
    return array if array.flags.c_contiguous else array.copy(order="C")


def _signature(value: Any) -> Any:
    return "text" if isinstance(value, bytes) else (value.shape, value.dtype)


def _describe_value(value: Any) -> str:
    if isinstance(value, bytes):
        return "a path or text"
    return f"an array of shape {value.shape} and dtype {value.dtype}"
