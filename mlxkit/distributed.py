"""Data-parallel helpers on MLX's own `mx.distributed` (ring, MPI, JACCL, NCCL backends).

Launch one process per device or host with `mlx.launch`, e.g. two local processes:

    mlx.launch -n 2 --backend ring -- python examples/gluon_mnist_mlp.py

Inside, `Trainer` finds the group by itself (`distributed=None`): each rank trains on a disjoint
shard of every epoch, gradients are averaged with an all-reduce inside the compiled step, metric
sums are all-reduced at epoch ends so every rank logs the same values, and only rank 0 prints or
writes files. `batch_size` is per rank: the global batch is `batch_size * world_size`, so scale the
learning rate accordingly (linearly for SGD, with a warm-up for large worlds).

This module owns the group discovery and the collectives the Trainer uses; it imports only MLX.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import mlx.core as mx


def distributed_group(distributed: bool | None) -> Any:
    """The `mx.distributed` group to train over, or `None` for single-process training.

    Args:
        distributed: `None` uses the group when the process was launched with more than one rank,
            `True` requires one, `False` never uses one.

    Example:
        >>> distributed_group(False) is None
        True
    """
    if distributed not in (None, True, False):
        raise ValueError(
            f"`distributed` must be None, True or False. Received: distributed={distributed!r}"
        )
    if distributed is False or not mx.distributed.is_available():
        if distributed is True:
            raise ValueError(
                "distributed=True, but this MLX build has no distributed backend available."
            )
        return None
    group = mx.distributed.init()
    if group.size() == 1:
        if distributed is True:
            raise ValueError(
                "distributed=True, but this process is alone (world size 1). Start it with "
                "`mlx.launch -n 2 --backend ring -- python script.py` (or a host file)."
            )
        return None
    return group


def rank() -> int:
    """This process's rank (0 when not launched with several ranks).

    Example:
        >>> rank()
        0
    """
    return mx.distributed.init().rank() if mx.distributed.is_available() else 0


def world_size() -> int:
    """The number of processes training together (1 when not launched with several ranks).

    Example:
        >>> world_size()
        1
    """
    return mx.distributed.init().size() if mx.distributed.is_available() else 1


def all_sum_states(states: list[dict[str, mx.array]], group: Any) -> list[dict[str, mx.array]]:
    """All-reduces (sums) every array of a list of state dicts in one collective.

    Metric states hold sums and counts, so the summed state gives the global metric.
    """
    flat = [(i, key, value) for i, state in enumerate(states) for key, value in state.items()]
    if not flat:
        return [{} for _ in states]
    # One concatenated float32 vector: a single collective instead of one per array.
    packed = mx.concatenate([value.astype(mx.float32).reshape(-1) for _, _, value in flat])
    summed = mx.distributed.all_sum(packed, group=group)
    result: list[dict[str, mx.array]] = [{} for _ in states]
    offset = 0
    for i, key, value in flat:
        part = summed[offset : offset + value.size].reshape(value.shape).astype(value.dtype)
        result[i][key] = part
        offset += value.size
    return result


class ShardedBatches:
    """Every `num_ranks`-th batch of a batch source from `rank` on, the same count on all ranks.

    For batch sources that cannot shard themselves (a plain list of batches); an
    `mlxkit.data.Stream` shards its samples instead.

    Example:
        >>> [b for b in ShardedBatches([0, 1, 2, 3, 4], rank=1, num_ranks=2)]
        [1, 3]
    """

    def __init__(self, batches: Iterable[Any], rank: int, num_ranks: int):
        self.batches, self.rank, self.num_ranks = batches, rank, num_ranks

    def __len__(self) -> int:
        return len(self.batches) // self.num_ranks  # type: ignore[arg-type]

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch, start_batch=start_batch * self.num_ranks)

    def __iter__(self) -> Iterator[Any]:
        group: list[Any] = []
        for batch in self.batches:
            group.append(batch)
            if len(group) == self.num_ranks:
                yield group[self.rank]
                group = []
