"""Keeping a failed or interrupted training step from breaking the Trainer or MLX.

`snapshot` / `restore` keep and put back the arrays a compiled step captured; `batch_signature`
says which calls may trace (the only calls of a compiled step that run Python, and so can fail
half-way); `StepBoundaryInterrupt` turns Ctrl-C into a stop at the end of the running step.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Hashable
from typing import Any, cast

from mlxkit._batches import flat_items

import mlx.core as mx
import numpy as np


def batch_signature(batch: Any) -> Hashable:
    """What MLX's compile cache keys a step's batch on: its structure, shapes and dtypes."""
    if type(batch) is tuple and all(type(part) is mx.array for part in batch):
        return tuple((part.shape, part.dtype) for part in batch)  # what ArrayBatches yields
    leaves = flat_items(batch, is_leaf=lambda value: not isinstance(value, (list, tuple, dict)))
    # MLX keys Python scalars by value; anything else gets a key that never matches (always
    # guarded).
    return tuple(
        (path, leaf.shape, leaf.dtype)
        if isinstance(leaf, mx.array)
        else (path, leaf if isinstance(leaf, (int, float, str, type(None))) else object())
        for path, leaf in leaves
    )


class _SavedRandomKey:
    """`mx.random.state` in a `snapshot`: MLX's random state takes no item assignment, so its key
    is put back by seeding (`seed(n)` sets the key to `(n >> 32, n & 0xffffffff)`)."""

    def __init__(self, key: mx.array):
        self.key = key

    def put_back(self) -> None:
        high, low = (int(part) for part in np.array(self.key))
        mx.random.seed((high << 32) | low)


def snapshot(tree: Any) -> Any:
    """A copy of the containers of `tree` holding the same (immutable) arrays: none is copied."""
    if isinstance(tree, dict):
        return {key: snapshot(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [snapshot(value) for value in tree]
    if isinstance(tree, tuple):
        return tuple(snapshot(value) for value in tree)
    if isinstance(tree, type(mx.random.state)):
        return _SavedRandomKey(cast(list, tree)[0])
    return tree


def restore(live: Any, saved: Any) -> None:
    """Puts `saved` (a `snapshot` of `live`) back into the containers of `live`, in place."""
    if isinstance(saved, _SavedRandomKey):
        saved.put_back()
    elif isinstance(live, dict):
        for key in [key for key in live if key not in saved]:
            del live[key]
        for key, value in saved.items():
            if _fits(live.get(key), value):
                restore(live[key], value)
            else:
                live[key] = value
    elif isinstance(live, list):
        del live[len(saved) :]
        for index, value in enumerate(saved):
            if index == len(live):
                live.append(value)
            elif _fits(live[index], value):
                restore(live[index], value)
            else:
                live[index] = value


def _fits(current: Any, saved: Any) -> bool:
    """Whether `saved` is restored into `current` in place rather than by assignment."""
    if isinstance(saved, _SavedRandomKey):
        return True
    return isinstance(saved, (dict, list)) and isinstance(current, type(saved))


class StepBoundaryInterrupt:
    """While active, Ctrl-C (SIGINT) asks `fit` to stop at the end of the running step.

    A `KeyboardInterrupt` raised at an arbitrary bytecode could land between a step and the update
    of the loop position, or half-way through a backup. So the first Ctrl-C only sets `requested`
    (the loop raises `KeyboardInterrupt` itself once the step and its callbacks are done); a second
    one raises at once. It installs itself only in the main thread, and only over Python's default
    handler, so that a handler of the user's (or a test runner's) keeps working.

    Args:
        active: `False` leaves Ctrl-C as it is (for distributed training).

    Example:
        >>> with StepBoundaryInterrupt() as interrupt:
        ...     interrupt.check()  # where a step has ended: raises if Ctrl-C was pressed
        ...     interrupt.requested
        False
    """

    def __init__(self, *, active: bool = True) -> None:
        self.active = active
        self.requested = False
        self.stopped_at_step_end = False  # True once `check` raised: the state is whole
        self._previous: Any = None

    def check(self) -> None:
        """Raises `KeyboardInterrupt` if Ctrl-C was pressed: call it where a step has ended."""
        if self.requested:
            self.stopped_at_step_end = True
            raise KeyboardInterrupt

    def __enter__(self) -> StepBoundaryInterrupt:
        if (
            self.active
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nmlxkit: interrupted; stopping after the current step (Ctrl-C again: at once).",
            file=sys.stderr,
            flush=True,
        )
