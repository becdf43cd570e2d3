"""The batch-source protocol: how `fit`, `evaluate` and `predict` get their batches, and how many.

This module owns the one protocol every batch source follows (`BatchSource`), the one function that
computes a rank's share of an epoch (`rank_share`), the one epoch permutation
(`epoch_permutation`), and `IterableBatches`, which makes any re-iterable of batches (a list of
`(x, y)` tuples, say) follow the protocol.

A batch source:

- yields batches from `iter(source)`: `(x, y)` tuples or dicts of arrays (NumPy or MLX);
- says how many batches an epoch has with `len(source)`;
- fixes the next epoch with `set_epoch(epoch, start_batch=0)`: the order is a pure function of the
  seed and the epoch, and the first `start_batch` batches are skipped (exact mid-epoch resume);
- declares its sharding in one way, `shard = (rank, num_ranks)` (`(0, 1)`: the whole epoch), and
  its data-order `seed` (`None` when it has none);
- returns a configured copy from `replace(seed=..., shard=...)`. `fit` trains on such a copy, so the
  object the user passed is never changed.

`ArrayBatches` (in-memory arrays) and `mlxkit.data.Stream` follow it; the Trainer wraps anything
else in `IterableBatches`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from mlxkit._validation import check_int

import numpy as np


@runtime_checkable
class BatchSource(Protocol):
    """What `Trainer.fit` / `evaluate` / `predict` iterate. See the module docstring.

    Example:
        >>> from mlxkit.data import Stream
        >>> import numpy as np
        >>> isinstance(Stream({"x": np.zeros((8, 2))}, batch_size=4), BatchSource)
        True
        >>> isinstance([(np.zeros(2), np.zeros(2))], BatchSource)
        False
    """

    @property
    def shard(self) -> tuple[int, int]:
        """`(rank, num_ranks)`: the share of every epoch this source yields; `(0, 1)`: all."""
        ...

    @property
    def seed(self) -> int | None:
        """The data-order seed, or `None` for a source without one."""
        ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None: ...

    def replace(
        self, *, seed: int | None = None, shard: tuple[int, int] | None = None
    ) -> BatchSource: ...


def rank_share(count: int, rank: int, num_ranks: int) -> slice:
    """The positions, among `count` in an epoch's order, that rank `rank` of `num_ranks` gets.

    Ranks take turns (rank-strided), and every rank gets `count // num_ranks` positions: the
    remainder is dropped, so no rank waits alone in a collective. Strided shares make the ranks'
    i-th batches, side by side, the i-th batch a single process would see with `num_ranks` times
    the batch size. Sample-level sources (arrays, `Stream`) apply it to samples, `IterableBatches`
    to whole batches.

    Example:
        >>> list(range(7)[rank_share(7, 1, 2)])
        [1, 3, 5]
    """
    return slice(rank, (count // num_ranks) * num_ranks, num_ranks)


def epoch_permutation(count: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch), the same on every rank.

    Example:
        >>> sorted(epoch_permutation(5, seed=0, epoch=1).tolist())
        [0, 1, 2, 3, 4]
        >>> bool((epoch_permutation(5, 0, 1) == epoch_permutation(5, 0, 1)).all())
        True
    """
    return np.random.default_rng([seed, epoch]).permutation(count)


def check_shard(shard: Any) -> tuple[int, int]:
    """Validates a `shard=(rank, num_ranks)` argument; `None` means `(0, 1)`.

    Example:
        >>> check_shard((1, 4))
        (1, 4)
        >>> check_shard((4, 4))
        Traceback (most recent call last):
          ...
        ValueError: `shard` must be (rank, num_ranks) with 0 <= rank < num_ranks, e.g. ...
    """
    if shard is None:
        return (0, 1)
    rank: Any
    num_ranks: Any
    try:
        rank, num_ranks = shard
    except (TypeError, ValueError):
        rank, num_ranks = None, None
    valid = all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (rank, num_ranks)
    )
    if not valid or not 0 <= rank < num_ranks:
        raise ValueError(
            "`shard` must be (rank, num_ranks) with 0 <= rank < num_ranks, e.g. "
            f"(group.rank(), group.size()). Received: shard={shard!r}"
        )
    return int(rank), int(num_ranks)


class IterableBatches:
    """Makes a re-iterable of batches (a list of `(x, y)` tuples, ...) follow `BatchSource`.

    Sharded, each rank gets its `rank_share` of every epoch's batches. `set_epoch(epoch,
    start_batch=k)` is passed on when the wrapped object has `set_epoch` (it then skips without
    loading, and orders its epochs itself); otherwise the first `k` batches are read and dropped.
    The wrapped object's `seed`, if it has one, is reported but cannot be changed.

    Args:
        batches: A re-iterable of batches, ideally with `len()`.
        shard: `(rank, num_ranks)`; `None` for the whole epoch.

    Example:
        >>> batches = IterableBatches([0, 1, 2, 3, 4], shard=(1, 2))
        >>> list(batches), len(batches)
        ([1, 3], 2)
        >>> batches.set_epoch(0, start_batch=1)
        >>> list(batches)
        [3]
    """

    def __init__(self, batches: Iterable[Any], *, shard: tuple[int, int] | None = None):
        self.batches = batches
        self.shard = check_shard(shard)
        seed = getattr(batches, "seed", None)
        self.seed: int | None = seed if isinstance(seed, int) else None
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        total = len(self.batches)  # type: ignore[arg-type]
        rank, num_ranks = self.shard
        return len(range(total)[rank_share(total, rank, num_ranks)])

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        check_int(epoch, "epoch", minimum=0)
        check_int(start_batch, "start_batch", minimum=0)
        self.epoch, self.start_batch = epoch, start_batch

    def replace(
        self, *, seed: int | None = None, shard: tuple[int, int] | None = None
    ) -> IterableBatches:
        """A copy with another `shard` (a seed cannot be given to an arbitrary iterable)."""
        del seed
        view = copy.copy(self)
        view.shard = check_shard(shard) if shard is not None else self.shard
        return view

    def __iter__(self) -> Iterator[Any]:
        rank, num_ranks = self.shard
        start_batch, self.start_batch = self.start_batch, 0
        skip = start_batch * num_ranks  # this rank's k-th batch is position k * num_ranks + rank
        skipped = 0  # positions the wrapped object itself skips, without loading them
        set_epoch = getattr(self.batches, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch, start_batch=skip)
            skipped = skip
        try:
            total = len(self.batches)  # type: ignore[arg-type]
        except TypeError:
            # Unknown length: this rank's batch of each complete group of num_ranks, which is
            # `rank_share` of however many batches come.
            groups = zip(*[iter(self.batches)] * num_ranks)
            mine = (group[rank] for group in groups)
            yield from itertools.islice(mine, (skip - skipped) // num_ranks, None)
            return
        share = rank_share(total, rank, num_ranks)
        start, stop = share.start + skip - skipped, max(share.stop - skipped, 0)
        yield from itertools.islice(iter(self.batches), start, stop, num_ranks)
