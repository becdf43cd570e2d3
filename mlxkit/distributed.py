"""Data-parallel helpers on MLX's own `mx.distributed` (ring, MPI, JACCL, NCCL backends).

Launch one process per device or host with `mlx.launch`, e.g. two local processes:

    mlx.launch -n 2 --backend ring -- python examples/gluon_mnist_mlp.py

Inside, `Trainer` finds the group by itself (`distributed=None`): each rank trains on a disjoint
shard of every epoch (`mlxkit.sources.rank_share`), gradients are averaged with an all-reduce
inside the compiled step, metric sums are all-reduced at epoch ends so every rank logs the same
values, and only rank 0 (`Trainer.is_main_process`) prints or writes files. `batch_size` is per
rank: the global batch is `batch_size * world_size`, so scale the learning rate accordingly
(linearly for SGD, with a warm-up for large worlds).

This module owns the group discovery and the collectives the Trainer uses; it imports only MLX.
"""

from __future__ import annotations

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
    """All-reduces (sums) every array of a list of state dicts, one collective per dtype.

    Metric states hold sums and counts, so the summed state gives the global metric. Arrays travel
    in their own dtype: an int64 count past 2**24 (float32's exact range) or 2**31 stays exact.

    Example:
        >>> group = mx.distributed.init()  # a world of one: the sum is the state itself
        >>> all_sum_states([{"count": mx.array(2**31 + 1, dtype=mx.int64)}], group)[0]["count"]
        array(2147483649, dtype=int64)
    """
    flat = [(i, key, value) for i, state in enumerate(states) for key, value in state.items()]
    result: list[dict[str, mx.array]] = [{} for _ in states]
    for dtype in dict.fromkeys(value.dtype for _, _, value in flat):
        same = [(i, key, value) for i, key, value in flat if value.dtype == dtype]
        # One concatenated vector per dtype: a collective per dtype instead of one per array.
        packed = mx.concatenate([value.reshape(-1) for _, _, value in same])
        summed = mx.distributed.all_sum(packed, group=group)
        offset = 0
        for i, key, value in same:
            result[i][key] = summed[offset : offset + value.size].reshape(value.shape)
            offset += value.size
    return result
