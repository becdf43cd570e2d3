"""summary: layers listed in the order the forward pass calls them, with their output shapes."""

from __future__ import annotations

import mlxkit

import mlx.core as mx
import mlx.nn as nn


class Net(nn.Module):
    """Attributes declared in an order unlike the call order (fc2 before pool), one unused."""

    def __init__(self):
        super().__init__()
        self.fc2 = nn.Linear(16, 3)
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.unused = nn.Linear(2, 2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4 * 4 * 4, 16)

    def __call__(self, x):
        x = self.pool(nn.relu(self.conv(x)))
        x = nn.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc2(x)


def layer_rows(text):
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Layer (type)"))) + 2
    rows = []
    for line in lines[start:]:
        if line.startswith("---"):
            break
        rows.append(line.split())
    return rows


def test_summary_lists_layers_in_call_order_with_shapes():
    text = mlxkit.summary(Net(), (2, 8, 8, 1), print_fn=None)
    rows = layer_rows(text)
    assert [row[0] for row in rows] == ["conv", "pool", "fc1", "fc2", "unused", "(output)"]
    shapes = {row[0]: " ".join(row[2:-1]) for row in rows[:-1]}
    assert shapes["conv"] == "(2, 8, 8, 4)"
    assert shapes["pool"] == "(2, 4, 4, 4)"
    assert shapes["fc1"] == "(2, 16)"
    params = {row[0]: int(row[-1].replace(",", "")) for row in rows[:-1]}
    assert params == {
        "conv": 1 * 9 * 4 + 4,
        "pool": 0,
        "fc1": 64 * 16 + 16,
        "fc2": 16 * 3 + 3,
        "unused": 6,
    }


def test_summary_nested_containers_come_before_their_layers():
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 2)))
    rows = layer_rows(mlxkit.summary(model, (1, 4), print_fn=None))
    names = [row[0] for row in rows]
    assert names == ["layers.0", "layers.1", "layers.1.layers.0", "layers.1.layers.1", "(output)"]


def test_summary_without_shape_lists_by_name_and_restores_classes():
    text = mlxkit.summary(Net(), print_fn=None)
    assert [row[0] for row in layer_rows(text)] == ["conv", "fc1", "fc2", "pool", "unused"]
    assert "__call__" not in vars(nn.Linear) or nn.Linear.__call__.__name__ == "__call__"
    assert mx.array(Net()(mx.zeros((1, 8, 8, 1))).shape).tolist() == [1, 3]
