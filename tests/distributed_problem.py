"""The tiny problem shared by the distributed test and its worker processes."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np

BATCH_PER_RANK = 8
NUM_SAMPLES = 64


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_SAMPLES, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x, y


def make_model(seed=0):
    mx.random.seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))


def global_batches_order(num_ranks=2):
    """The sample order in which a single process sees the ranks' batches side by side.

    Unshuffled, rank r holds samples r, r + R, r + 2R, ... (`mlxkit.sources.rank_share`), so the
    ranks' i-th batches together are samples [i * B * R, (i + 1) * B * R): the single process's
    i-th batch of size B * R, in the original order. Built here from the definition, not from
    mlxkit's function.
    """
    per_rank = [list(range(rank, NUM_SAMPLES, num_ranks)) for rank in range(num_ranks)]
    order = []
    for start in range(0, NUM_SAMPLES // num_ranks, BATCH_PER_RANK):
        for rank in range(num_ranks):
            order.extend(per_rank[rank][start : start + BATCH_PER_RANK])
    return np.array(order)
