"""PyTorch side of `bench_conv.py`: the same layers and training steps, on the CPU.

Runs in a Python with PyTorch (the `benchmarks/.venvs/torch` peer, or the current one), as a
long-lived process so the parent can interleave its calls with MLX's: it reads the workload list
(JSON) from its first argument, builds everything, prints `READY`, then answers each `run KEY`
line on stdin with the seconds one call took. Inputs are NCHW; sizes match the MLX ones.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from _torch_worker import DepthResNet20  # the trainer benchmark's twin (this folder is on sys.path)


def nchw(shape: list[int]) -> tuple[int, ...]:
    b, *spatial, c = shape
    return (b, c, *spatial)


def double_conv(cin: int, c: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """`mlxkit.models.UNet` in NCHW."""

    def __init__(self, cin: int, classes: int, f: int):
        super().__init__()
        self.enc = nn.ModuleList(
            [double_conv(cin if i == 0 else f << (i - 1), f << i) for i in range(4)]
        )
        self.bottleneck = double_conv(8 * f, 16 * f)
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(16 * f >> i, 8 * f >> i, 2, stride=2) for i in range(4)]
        )
        self.dec = nn.ModuleList([double_conv(16 * f >> i, 8 * f >> i) for i in range(4)])
        self.conv = nn.Conv2d(f, classes, 1)

    def forward(self, x):
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.conv(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.down = None
        if stride != 1 or cin != c:
            self.down = nn.Sequential(
                nn.Conv2d(cin, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c)
            )

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.down is None else self.down(x)))


def resnet18(classes: int) -> nn.Module:
    """torchvision's ResNet-18 (as `mlxkit.models.resnet18`)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    cin = 64
    for index, c in enumerate((64, 128, 256, 512)):
        stride = 1 if index == 0 else 2
        layers += [BasicBlock(cin, c, stride), BasicBlock(c, c, 1)]
        cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """`mlxkit.models.DCGANGenerator` in NCHW."""

    def __init__(self, latent: int):
        super().__init__()
        self.dense = nn.Linear(latent, 7 * 7 * 256)
        self.bn0 = nn.BatchNorm1d(7 * 7 * 256)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 5, stride=1, padding=2),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.net(F.relu(self.bn0(self.dense(z))).reshape(-1, 256, 7, 7))


def discriminator() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 64, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.25),
        nn.Conv2d(64, 128, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(7 * 7 * 128, 1),
    )


def layer_call(spec: dict, backward: bool):
    kind, cin, cout, k, s, p, shape = (
        spec[n] for n in ("kind", "cin", "cout", "k", "s", "p", "shape")
    )
    cls = nn.Conv2d if kind == "Conv2d" else nn.ConvTranspose2d
    layer = cls(cin, cout, k, stride=s, padding=p)
    x = torch.randn(nchw(shape), requires_grad=backward)

    def call():
        if backward:
            y = layer(x)
            y.backward(torch.ones_like(y))
        else:
            with torch.no_grad():
                layer(x)

    return call


def train_call(spec: dict):
    name, batch = spec["model"], spec["batch"]
    if name == "dcgan":
        g, d = Generator(100), discriminator()
        opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real, z = torch.rand(batch, 1, 28, 28) * 2 - 1, torch.randn(batch, 100)
        ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
        bce = F.binary_cross_entropy_with_logits

        def call():
            fake = g(z)
            loss_d = bce(d(real), ones) + bce(d(fake.detach()), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(d(g(z)), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()

        return call
    size = spec["size"]
    if name == "unet":
        model, loss = UNet(3, 1, 8), F.binary_cross_entropy_with_logits
        x, y = torch.rand(batch, 3, *size), (torch.rand(batch, 1, *size) > 0.5).float()
    elif name == "resnet18":
        model, loss = resnet18(10), F.cross_entropy
        x, y = torch.rand(batch, 3, *size), torch.randint(0, 10, (batch,))
    else:
        model, loss = DepthResNet20(), F.mse_loss
        x, y = torch.rand(batch, 3, *size), torch.rand(batch, 1, *size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def call():
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()

    return call


def main() -> None:
    torch.set_num_threads(int(sys.argv[2]))
    torch.manual_seed(0)
    calls = {}
    for key, spec in json.loads(sys.argv[1]).items():
        if spec["what"] == "layer":
            calls[key] = layer_call(spec, spec["backward"])
        else:
            calls[key] = train_call(spec)
    print("READY", flush=True)
    for line in sys.stdin:
        key = line.split(maxsplit=1)[1].strip()
        start = time.perf_counter()
        calls[key]()
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main()
