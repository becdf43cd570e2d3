"""Graph convolutional network (Kipf & Welling, ICLR 2017) and its adjacency normalisation.

Source: github.com/tkipf/gcn (`gcn/models.py`, `gcn/layers.py`, `gcn/utils.py`): two graph
convolutions `A_hat @ (X @ W)` without bias, Glorot-uniform weights, dropout on the input of
each layer, ReLU between them; the output is logits (the softmax lives in the loss). `A_hat` is
the renormalised adjacency D^-1/2 (A + I) D^-1/2 of the symmetrised graph.

The adjacency is dense (N, N): right for Cora-sized graphs (2,708 nodes) and simple to export.
"""

from __future__ import annotations

import os

from mlxkit.models._common import (
    check_positive_int,
    check_probability,
    glorot_uniform,
    load_weights,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np

__all__ = ["GCN", "GraphConvolution", "gcn", "normalized_adjacency"]


def normalized_adjacency(edges: np.ndarray, num_nodes: int) -> mx.array:
    """Builds the dense renormalised adjacency D^-1/2 (A + I) D^-1/2 used by GCN.

    The edge list is treated as undirected (each pair is added in both directions), duplicate
    edges count once, and every node gets exactly one self-loop (self-loops already present in
    `edges` are not doubled). D is the degree matrix of A + I.

    Args:
        edges: integer array of shape (num_edges, 2), each row a pair of node indices in
            `[0, num_nodes)`. May be empty.
        num_nodes: number of nodes N.

    Returns:
        A float32 `mx.array` of shape (N, N).

    Example:
        >>> import numpy as np
        >>> from mlxkit.models import normalized_adjacency
        >>> a = normalized_adjacency(np.array([[0, 1]]), 2)
        >>> a.tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    check_positive_int(num_nodes, "num_nodes", "normalized_adjacency")
    edges = np.asarray(edges)
    if edges.size == 0:
        edges = edges.reshape(0, 2).astype(np.int64)
    if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(
            "normalized_adjacency: `edges` must be an integer array of shape (num_edges, 2). "
            f"Received: edges.shape={edges.shape}, edges.dtype={edges.dtype}"
        )
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(
            f"normalized_adjacency: node indices must lie in [0, {num_nodes}). Received: "
            f"min index {int(edges.min())}, max index {int(edges.max())}, num_nodes={num_nodes}"
        )
    adjacency = np.zeros((num_nodes, num_nodes), dtype=np.float64)
    adjacency[edges[:, 0], edges[:, 1]] = 1.0
    adjacency[edges[:, 1], edges[:, 0]] = 1.0
    np.fill_diagonal(adjacency, 1.0)
    inv_sqrt_degree = 1.0 / np.sqrt(adjacency.sum(axis=1))
    normalized = inv_sqrt_degree[:, None] * adjacency * inv_sqrt_degree[None, :]
    return mx.array(normalized.astype(np.float32))


class GraphConvolution(nn.Module):
    """One graph convolution `adjacency @ (x @ weight)`, Glorot-uniform weight, no bias.

    Args:
        in_features: features per node on input.
        out_features: features per node on output.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.gcn import GraphConvolution
        >>> layer = GraphConvolution(4, 2)
        >>> layer(mx.ones((3, 4)), mx.eye(3)).shape
        (3, 2)
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = glorot_uniform(mx.zeros((in_features, out_features)))

    def __call__(self, x: mx.array, adjacency: mx.array) -> mx.array:
        return adjacency @ (x @ self.weight)


class GCN(nn.Module):
    """Two-layer GCN: dropout, graph conv, ReLU, dropout, graph conv -> per-node logits.

    Call it as `model(features, adjacency)` with features (N, in_features) and the dense
    normalised adjacency (N, N) from `normalized_adjacency`; it returns (N, num_classes) logits.
    Build it with `gcn()`.

    Args:
        in_features: features per node.
        hidden: width of the hidden layer.
        num_classes: number of node classes.
        dropout: drop probability applied to the input of each layer while training.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.gcn import GCN
        >>> GCN(4, 8, 3).eval()(mx.ones((5, 4)), mx.eye(5)).shape
        (5, 3)
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.in_features = in_features
        self.gc1 = GraphConvolution(in_features, hidden)
        self.gc2 = GraphConvolution(hidden, num_classes)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, features: mx.array, adjacency: mx.array) -> mx.array:
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"gcn expects node features of shape (num_nodes, {self.in_features}). "
                f"Received: features.shape={tuple(features.shape)}"
            )
        num_nodes = features.shape[0]
        if tuple(adjacency.shape) != (num_nodes, num_nodes):
            raise ValueError(
                f"gcn expects a dense (num_nodes, num_nodes) = ({num_nodes}, {num_nodes}) "
                f"adjacency, e.g. from normalized_adjacency. "
                f"Received: adjacency.shape={tuple(adjacency.shape)}"
            )
        x = nn.relu(self.gc1(self.dropout(features), adjacency))
        return self.gc2(self.dropout(x), adjacency)


def gcn(
    in_features: int = 1433,
    hidden: int = 16,
    num_classes: int = 7,
    *,
    dropout: float = 0.5,
    weights: str | os.PathLike[str] | None = None,
) -> GCN:
    """Builds Kipf & Welling's two-layer GCN (see `GCN`); defaults fit Cora.

    Args:
        in_features: features per node (1433 bag-of-words features on Cora).
        hidden: width of the hidden layer.
        num_classes: number of node classes (7 on Cora).
        dropout: drop probability on each layer's input while training, in [0, 1).
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `GCN` called as `model(features, adjacency)` -> (num_nodes, num_classes) logits.

    Example:
        >>> import mlx.core as mx
        >>> import numpy as np
        >>> from mlxkit.models import gcn, normalized_adjacency
        >>> model = gcn(in_features=4, hidden=8, num_classes=3).eval()
        >>> adjacency = normalized_adjacency(np.array([[0, 1], [1, 2]]), 3)
        >>> model(mx.ones((3, 4)), adjacency).shape
        (3, 3)
    """
    check_positive_int(in_features, "in_features", "gcn")
    check_positive_int(hidden, "hidden", "gcn")
    check_positive_int(num_classes, "num_classes", "gcn")
    check_probability(dropout, "dropout", "gcn")
    model = GCN(in_features, hidden, num_classes, dropout)
    return load_weights(model, weights, factory="gcn")
