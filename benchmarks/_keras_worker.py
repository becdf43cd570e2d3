"""Keras 3 on MLX (keras-nightly + keras-mlx) side of the trainer benchmark.

Runs in `benchmarks/.venvs/keras` (created by `run.py --setup`), one process per measurement, and
prints one `RESULT {json}` line. Before MLX loads, it loads the same optimized BLAS as mlxkit, by
running `mlxkit/_blas.py` from the checkout (mlxkit itself is not installed there), so both use
the same matrix multiply. The models mirror `_mlx_worker.build_model` and start from the same
initial weights, and epoch 1 visits the samples in the same order.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _workloads as W  # noqa: E402


def load_fast_blas() -> str:
    """Runs `mlxkit/_blas.py` (and the `mlxkit._io` it imports) without the mlxkit package.

    This environment has Keras and MLX only: importing `mlxkit` itself would need mlx-data.
    An empty `mlxkit` package pointing at the source folder lets those two modules load alone.
    """
    if os.environ.get("MLXKIT_BLAS", "").lower() == "off":
        return "reference BLAS (MLXKIT_BLAS=off)"
    folder = os.path.join(HERE, "..", "mlxkit")
    if not os.path.exists(os.path.join(folder, "_blas.py")):
        return "reference BLAS (mlxkit/_blas.py not found)"
    package = types.ModuleType("mlxkit")
    package.__path__ = [folder]
    sys.modules["mlxkit"] = package
    return importlib.import_module("mlxkit._blas").load().source


BLAS = load_fast_blas()
os.environ["KERAS_BACKEND"] = "mlx"

import keras  # noqa: E402
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402


class Upsample(layers.Layer):
    """MLX's `nn.Upsample(2, "linear", align_corners=True)`; Keras's own has no align_corners."""

    def call(self, x):
        rows = ops.convert_to_tensor(W.upsample_matrix(x.shape[1]))
        cols = ops.convert_to_tensor(W.upsample_matrix(x.shape[2]))
        x = ops.einsum("oh,bhwc->bowc", rows, x)
        return ops.einsum("pw,bowc->bopc", cols, x)


class ShortcutA(layers.Layer):
    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.pad = dims // 4

    def call(self, x):
        return ops.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (self.pad, self.pad)])


def conv(filters, kernel, stride, padding, name, bias=True):
    """A conv padded like MLX's (symmetric `padding`), which Keras's "same" is not at stride 2."""
    body = layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=bias, name=name)
    if padding == 0:
        return body
    return keras.Sequential([layers.ZeroPadding2D(padding), body])


def batch_norm(name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


class Block(layers.Layer):
    def __init__(self, in_dims, dims, stride, prefix, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = conv(dims, 3, stride, 1, f"{prefix}.conv1", bias=False)
        self.bn1 = batch_norm(f"{prefix}.bn1")
        self.conv2 = conv(dims, 3, 1, 1, f"{prefix}.conv2", bias=False)
        self.bn2 = batch_norm(f"{prefix}.bn2")
        self.shortcut = ShortcutA(dims) if stride != 1 else None

    def call(self, x, training=None):
        out = ops.relu(self.bn1(self.conv1(x), training=training))
        out = self.bn2(self.conv2(out), training=training)
        return ops.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class DepthResNet20(keras.Model):
    """`mlxkit.models.DepthResNet20` in Keras, channels last, layers named after MLX's keys."""

    def __init__(self):
        super().__init__()
        self.conv1 = conv(16, 7, 2, 3, "conv1", bias=False)
        self.bn1 = batch_norm("bn1")
        self.stages = []
        for index, (in_dims, dims, stride) in enumerate(
            [(16, 16, 1), (16, 32, 2), (32, 64, 2), (64, 128, 2)], start=1
        ):
            self.stages.append(
                [
                    Block(in_dims, dims, stride, f"layer{index}.layers.0"),
                    Block(dims, dims, 1, f"layer{index}.layers.1"),
                    Block(dims, dims, 1, f"layer{index}.layers.2"),
                ]
            )
        self.upsample = Upsample()
        self.conv_cat1 = conv(64, 1, 1, 0, "conv_cat1")
        self.conv_cat2 = conv(64, 1, 1, 0, "conv_cat2")
        self.conv_cat3 = conv(64, 1, 1, 0, "conv_cat3")
        self.output_conv = conv(1, 1, 1, 0, "output")

    def call(self, x, training=None):
        stem = ops.relu(self.bn1(self.conv1(x), training=training))
        features, h = [], stem
        for stage in self.stages:
            for block in stage:
                h = block(h, training=training)
            features.append(h)
        c0, c1, c2, x = features
        x = self.conv_cat1(ops.concatenate([self.upsample(x), c2], axis=-1))
        x = self.conv_cat2(ops.concatenate([self.upsample(x), c1], axis=-1))
        x = self.conv_cat3(ops.concatenate([self.upsample(x), c0, stem], axis=-1))
        return self.output_conv(self.upsample(x))


def build_model(kind: str):
    if kind == "mlp":
        return keras.Sequential(
            [
                keras.Input((784,)),
                layers.Dense(64, activation="relu", name="layers.0"),
                layers.Dense(64, activation="relu", name="layers.2"),
                layers.Dense(10, name="layers.4"),
            ]
        )
    if kind == "cnn":
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(16, 3, padding="same", activation="relu", name="layers.0"),
                layers.MaxPooling2D(2),
                layers.Conv2D(32, 3, padding="same", activation="relu", name="layers.3"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(64, activation="relu", name="layers.7"),
                layers.Dense(10, name="layers.9"),
            ]
        )
    model = DepthResNet20()
    model(np.zeros((1, *W.DEPTH_SIZE, 3), np.float32))  # builds the weights
    return model


def _named_layers(model) -> dict:
    """Every weight-holding layer by name, looking inside blocks and padded convs."""
    found = {}

    def visit(layer):
        if isinstance(layer, (layers.Conv2D, layers.Dense, layers.BatchNormalization)):
            found[layer.name] = layer
        elif isinstance(layer, keras.Sequential):
            for child in layer.layers:
                visit(child)
        elif isinstance(layer, Block):
            for child in (layer.conv1, layer.bn1, layer.conv2, layer.bn2):
                visit(child)

    if isinstance(model, DepthResNet20):
        top = [model.conv1, model.bn1, model.conv_cat1, model.conv_cat2, model.conv_cat3]
        top += [model.output_conv] + [block for stage in model.stages for block in stage]
    else:
        top = model.layers
    for layer in top:
        visit(layer)
    return found


def load_initial(model, path: str) -> None:
    """Copies MLX's initial weights, kernels transposed to Keras's (kh, kw, in, out) / (in, out)."""
    arrays = dict(np.load(path, allow_pickle=False))
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        prefix, _, leaf = key.rpartition(".")
        by_layer.setdefault(prefix, {})[leaf] = value
    named = _named_layers(model)
    if set(named) != set(by_layer):
        raise KeyError(f"layers differ: keras {sorted(named)} vs MLX {sorted(by_layer)}")
    for name, layer in named.items():
        params = by_layer[name]
        if isinstance(layer, layers.BatchNormalization):
            values = [params[k] for k in ("weight", "bias", "running_mean", "running_var")]
        else:
            weight = params["weight"]
            kernel = weight.transpose(1, 2, 3, 0) if weight.ndim == 4 else weight.T
            values = [kernel] + ([params["bias"]] if "bias" in params else [])
        layer.set_weights(values)


class Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends: list[tuple[float, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(W.clock())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", default="mlp", choices=sorted(W.WORKLOADS))
    parser.add_argument("--init", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="full", choices=sorted(W.SIZES))
    parser.add_argument("--mnist", default=W.DEFAULT_MNIST)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    spec = W.workload(args.workload, args.size)
    x, y = W.load_data(args.workload, args.size, mnist=args.mnist)
    # Epoch 1 in the other frameworks' order, whole batches only: Keras cannot take an order per
    # epoch, so the arrays are permuted before fit and `shuffle=False` keeps that order (epoch 2
    # repeats it, which changes its time by no more than a gather per batch).
    index = W.order(len(x), args.seed, 0)[: spec.steps * spec.batch_size]
    x, y = x[index], y[index]
    model = build_model(spec.model)
    load_initial(model, args.init)
    classify = spec.loss == "cross_entropy"
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=spec.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True) if classify else "mse",
        metrics=["accuracy" if classify else "mae"],
    )
    mx.reset_peak_memory()
    clock = Clock()
    start = W.clock()
    history = model.fit(
        x, y, batch_size=spec.batch_size, epochs=2, shuffle=False, verbose=0, callbacks=[clock]
    )
    W.emit(
        {
            **W.epoch_times(start, clock.ends),
            "loss": float(history.history["loss"][0]),
            "steps": spec.steps,
            "peak_rss_mb": W.peak_rss_mb(),
            "mlx_peak_mb": mx.get_peak_memory() / 2**20,
            "blas": BLAS,
            "version": f"keras {keras.__version__}, mlx {mx.__version__}",
        }
    )


if __name__ == "__main__":
    main()
