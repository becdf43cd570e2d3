"""PyTorch side of the trainer benchmark: a plain eager loop and PyTorch Lightning, on the CPU.

Runs in `benchmarks/.venvs/torch` (created by `run.py --setup`), one process per measurement, and
prints one `RESULT {json}` line. The models mirror `_mlx_worker.build_model` layer for layer and
start from the same initial weights (the `.npz` the MLX worker wrote, converted to NCHW); the
samples come in the same order (`_workloads.order`), so the loss after one epoch should match
MLX's up to floating-point differences.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _workloads as W


class ShortcutA(nn.Module):
    def __init__(self, dims: int):
        super().__init__()
        self.pad = dims // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class Block(nn.Module):
    def __init__(self, in_dims: int, dims: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dims, dims, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dims)
        self.conv2 = nn.Conv2d(dims, dims, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dims)
        self.shortcut = ShortcutA(dims) if stride != 1 else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class DepthResNet20(nn.Module):
    """`mlxkit.models.DepthResNet20` in NCHW, with the same parameter names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(*self._stage(16, 16, 1))
        self.layer2 = nn.Sequential(*self._stage(16, 32, 2))
        self.layer3 = nn.Sequential(*self._stage(32, 64, 2))
        self.layer4 = nn.Sequential(*self._stage(64, 128, 2))
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv_cat1 = nn.Conv2d(128 + 64, 64, 1)
        self.conv_cat2 = nn.Conv2d(64 + 32, 64, 1)
        self.conv_cat3 = nn.Conv2d(64 + 16 + 16, 64, 1)
        self.output = nn.Conv2d(64, 1, 1)

    @staticmethod
    def _stage(in_dims, dims, stride):
        return [Block(in_dims, dims, stride), Block(dims, dims, 1), Block(dims, dims, 1)]

    def forward(self, x):
        stem = F.relu(self.bn1(self.conv1(x)))
        c0 = self.layer1(stem)
        c1 = self.layer2(c0)
        c2 = self.layer3(c1)
        x = self.layer4(c2)
        x = self.conv_cat1(torch.cat([self.upsample(x), c2], dim=1))
        x = self.conv_cat2(torch.cat([self.upsample(x), c1], dim=1))
        x = self.conv_cat3(torch.cat([self.upsample(x), c0, stem], dim=1))
        return self.output(self.upsample(x))


def build_model(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        )
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(7 * 7 * 32, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
    return DepthResNet20()


def load_initial(model: nn.Module, kind: str, path: str) -> None:
    """Copies MLX's initial weights: NHWC conv kernels to NCHW, names without `layers.`."""
    arrays = dict(np.load(path, allow_pickle=False))
    state = {}
    for key, value in arrays.items():
        name = key.replace("layers.", "")
        if value.ndim == 4:  # MLX conv kernels are (out, kh, kw, in)
            value = value.transpose(0, 3, 1, 2)
        if kind == "cnn" and name == "7.weight":
            # MLX flattens (h, w, c), PyTorch (c, h, w): permute the first dense layer's inputs.
            value = value.reshape(64, 7, 7, 32).transpose(0, 3, 1, 2).reshape(64, -1)
        state[name] = torch.from_numpy(np.ascontiguousarray(value))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"weights do not match: missing {missing}, unexpected {unexpected}")


def to_torch(x: np.ndarray, y: np.ndarray, spec: W.Workload):
    """NHWC images to NCHW tensors (part of the first epoch's time, as MLX's copy to device)."""
    x_t = torch.from_numpy(x)
    if x.ndim == 4:
        x_t = x_t.permute(0, 3, 1, 2).contiguous()
    y_t = torch.from_numpy(y)
    y_t = y_t.permute(0, 3, 1, 2).contiguous() if spec.loss == "mse" else y_t.long()
    return x_t, y_t


def loss_and_metric(spec: W.Workload):
    if spec.loss == "mse":
        return F.mse_loss, lambda out, y: (out - y).abs().mean()
    return F.cross_entropy, lambda out, y: (out.argmax(dim=1) == y).sum()


def run_plain(args, spec, x, y) -> tuple[dict, float]:
    """The usual eager loop, written for speed: device-side gathers, no `.item()` per step."""
    model = build_model(spec.model)
    load_initial(model, spec.model, args.init)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
    loss_fn, metric_fn = loss_and_metric(spec)
    start = W.clock()
    xt, yt = to_torch(x, y, spec)
    ends, first_loss = [], 0.0
    for epoch in range(2):
        total = torch.zeros(())
        metric = torch.zeros(())
        perm = torch.from_numpy(W.order(len(xt), args.seed, epoch))
        for i in range(spec.steps):
            index = perm[i * spec.batch_size : (i + 1) * spec.batch_size]
            xb, yb = xt[index], yt[index]
            optimizer.zero_grad(set_to_none=True)
            outputs = model(xb)
            loss = loss_fn(outputs, yb)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                total += loss.detach()
                metric += metric_fn(outputs.detach(), yb)
        if epoch == 0:
            first_loss = total.item() / spec.steps
        ends.append(W.clock())
    return W.epoch_times(start, ends), first_loss


def run_lightning(args, spec, x, y) -> tuple[dict, float]:
    """A LightningModule and `Trainer.fit` over a standard `DataLoader`, logging off."""
    import lightning as L
    from torch.utils.data import DataLoader, Sampler, TensorDataset

    loss_fn, metric_fn = loss_and_metric(spec)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build_model(spec.model)
            load_initial(self.net, spec.model, args.init)

        def training_step(self, batch, batch_index):
            xb, yb = batch
            outputs = self.net(xb)
            loss = loss_fn(outputs, yb)
            metric = metric_fn(outputs.detach(), yb)
            if spec.loss != "mse":
                metric = metric / len(yb)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            self.log("train_metric", metric, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=spec.learning_rate)

    class EpochOrder(Sampler):
        """The benchmark's per-epoch order; Lightning calls `set_epoch` before each epoch."""

        def __init__(self, num):
            self.num, self.epoch = num, 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            return iter(W.order(self.num, args.seed, self.epoch).tolist())

        def __len__(self):
            return self.num

    class Clock(L.Callback):
        def __init__(self):
            self.ends, self.losses = [], []

        def on_train_epoch_end(self, trainer, module):
            self.ends.append(W.clock())
            self.losses.append(float(trainer.callback_metrics["train_loss"]))

    clock = Clock()
    module = Module()
    start = W.clock()
    xt, yt = to_torch(x, y, spec)
    loader = DataLoader(
        TensorDataset(xt, yt),
        batch_size=spec.batch_size,
        sampler=EpochOrder(len(xt)),
        drop_last=True,
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, loader)
    return W.epoch_times(start, clock.ends), clock.losses[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", choices=["torch", "lightning"], required=True)
    parser.add_argument("--workload", default="mlp", choices=sorted(W.WORKLOADS))
    parser.add_argument("--init", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="full", choices=sorted(W.SIZES))
    parser.add_argument("--mnist", default=W.DEFAULT_MNIST)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    spec = W.workload(args.workload, args.size)
    x, y = W.load_data(args.workload, args.size, mnist=args.mnist)
    runner = run_plain if args.framework == "torch" else run_lightning
    times, loss = runner(args, spec, x, y)
    if args.framework == "lightning":
        import lightning

        version = f"torch {torch.__version__}, lightning {lightning.__version__}"
    else:
        version = f"torch {torch.__version__}"
    W.emit(
        {
            **times,
            "loss": loss,
            "steps": spec.steps,
            "peak_rss_mb": W.peak_rss_mb(),
            "threads": torch.get_num_threads(),
            "version": version,
        }
    )


if __name__ == "__main__":
    main()
