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

    Unshuffled, rank r holds samples [r * N/R, (r + 1) * N/R); its i-th batch joins the other ranks'
    i-th batches in one global batch.
    """
    per_rank = NUM_SAMPLES // num_ranks
    order = []
    for start in range(0, per_rank, BATCH_PER_RANK):
        for rank in range(num_ranks):
            order.extend(range(rank * per_rank + start, rank * per_rank + start + BATCH_PER_RANK))
    return np.array(order)
