"""`set_seed`: one call that seeds every random generator a training script draws from."""

from __future__ import annotations

import random

import mlx.core as mx
import numpy as np


def set_seed(seed: int) -> None:
    """Seeds `mx.random`, NumPy's global generator and Python's `random` with `seed`.

    Call it before building the model: MLX layers draw their initial weights from `mx.random`
    when they are constructed, before `Trainer.fit(seed=...)` runs. With `set_seed` first and
    the same `fit(seed=...)`, two runs of a script on one machine give identical histories
    (`keras.utils.set_random_seed` plays this part in Keras).

    Args:
        seed: A non-negative integer below 2**32.

    Example:
        >>> import mlx.nn as nn
        >>> set_seed(0)
        >>> first = nn.Linear(3, 2).weight
        >>> set_seed(0)
        >>> (nn.Linear(3, 2).weight == first).all().item()
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"set_seed: `seed` must be an int in [0, 2**32). Received: seed={seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)
