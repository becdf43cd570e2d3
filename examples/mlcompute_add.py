"""The MLCompute article's first graph, in MLX: three (6, 1) tensors added by two add layers.

MLCompute builds an `MLCGraph` of two arithmetic layers and runs it on a device. In MLX the graph is
just the function below: operations are lazy, `mx.compile` fuses the graph once, and the same
function exports to MLX's portable `.mlxfn` format and to a Core ML `.mlpackage`.

Run:
    python examples/mlcompute_add.py [--out DIR]
"""

import argparse
import os
import sys

import mlxkit  # noqa: F401  (before mlx.core: loads a fast BLAS on Linux)
from mlxkit.export import run_mlpackage_numpy, to_coreml, to_mlxfn

import mlx.core as mx

parser = argparse.ArgumentParser(description="MLCompute's add-two-layers graph in MLX")
parser.add_argument("--out", default="runs/mlcompute_add")
args = parser.parse_args()


def graph(a, b, c):
    return (a + b) + c  # two add layers, as the MLCGraph


a = mx.arange(1, 7, dtype=mx.float32).reshape(6, 1)  # [1, 2, ..., 6]
b = (mx.arange(1, 7, dtype=mx.float32) / 10).reshape(6, 1)  # [0.1, ..., 0.6]
c = mx.full((6, 1), -0.1)

lazy = graph(a, b, c)  # nothing has run yet: `lazy` is a node of the graph
compiled = mx.compile(graph)  # traced and fused once, reused on every call
result = compiled(a, b, c)
print("result:", [round(v, 4) for v in result.reshape(-1).tolist()])  # [1.0, 2.1, ..., 6.5]
assert mx.allclose(result, lazy).item()

os.makedirs(args.out, exist_ok=True)
mlxfn = to_mlxfn(graph, [a, b, c], os.path.join(args.out, "add.mlxfn"))
imported = mx.import_function(mlxfn)
print(".mlxfn :", [round(v, 4) for v in imported(a, b, c)[0].reshape(-1).tolist()])

package = to_coreml(
    graph,
    [a, b, c],
    os.path.join(args.out, "add.mlpackage"),
    input_names=["a", "b", "c"],
    output_names=["sum"],
    compute_precision="float32",
)
# The Core ML runtime exists only on Apple platforms; mlxkit's NumPy interpreter of the saved
# program (the same MIL operations, run in NumPy) checks it anywhere. Each line names its engine.
checked = run_mlpackage_numpy(package.path, {"a": a, "b": b, "c": c})
print(
    "Core ML program (NumPy interpreter):",
    [round(float(v), 4) for v in checked["sum"].reshape(-1)],
)
if sys.platform == "darwin":
    import coremltools as ct
    import numpy as np

    runtime = ct.models.MLModel(package.path).predict(
        {"a": np.array(a), "b": np.array(b), "c": np.array(c)}
    )
    print("Core ML runtime (macOS):", [round(float(v), 4) for v in runtime["sum"].reshape(-1)])
print(f"Files in {os.path.abspath(args.out)}")
