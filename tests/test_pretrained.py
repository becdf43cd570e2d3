"""`mlxkit.models.pretrained`: torchvision checkpoints load exactly, and frozen backbones stay put.

Each architecture is checked against an independent PyTorch reference (tests/_torch_reference.py,
torchvision's module tree and parameter names in plain torch) with seeded random weights *and*
BatchNorm statistics: its `state_dict()` goes through safetensors into the mlxkit model and both
run the same input in eval mode. The torch tests need the CPU torch build (`pip install
'mlxkit[torch]' torch==2.13.0+cpu`); they skip without it, except in CI, where they fail.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys

import mlxkit  # first, so the fast BLAS loads before mlx.core  # isort: skip
from mlxkit.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenBatchNorm,
    deeplabv3_mobilenet_v3_large,
    fold_input_normalization,
    freeze_backbone,
    load_pretrained,
    lraspp_mobilenet_v3_large,
    mobilenet_v3_large,
    resnet18,
    resnet50,
    vgg19_cifar,
)

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

if os.environ.get("CI"):
    import torch  # CI installs the CPU build: a missing torch must fail there, not skip
else:
    torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0+cpu)")

from safetensors.torch import save_file

from tests import _torch_reference as ref
from tests.examples_common import ROOT, run_example

# (mlxkit factory, torch reference, input side); widths are torchvision's full ones.
ARCHITECTURES = {
    "resnet18": (lambda: resnet18(), lambda: ref.resnet18(), 64),
    "resnet50": (lambda: resnet50(), lambda: ref.resnet50(), 64),
    "vgg19_cifar": (lambda: vgg19_cifar(10), lambda: ref.VGG19CIFAR(10), 32),
    "mobilenet_v3_large": (lambda: mobilenet_v3_large(), lambda: ref.MobileNetV3(), 64),
    "lraspp_mobilenet_v3_large": (
        lambda: lraspp_mobilenet_v3_large(21),
        lambda: ref.LRASPP(21),
        64,
    ),
    "deeplabv3_mobilenet_v3_large": (
        lambda: deeplabv3_mobilenet_v3_large(21),
        lambda: ref.DeepLabV3(21),
        64,
    ),
}


def save_state_dict(module, path) -> str:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def torch_output(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    out = out.numpy()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference over the reference's largest magnitude."""
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_torchvision_weights_reproduce_the_reference_outputs(name, tmp_path):
    build, build_reference, side = ARCHITECTURES[name]
    torch.manual_seed(0)
    reference = ref.randomize(build_reference(), seed=0)
    path = save_state_dict(reference, tmp_path / f"{name}.safetensors")
    model = build()
    report = load_pretrained(model, path)
    assert report.skipped == ()
    assert len(report.loaded) == len(tree_flatten(model.parameters()))
    x = np.random.default_rng(0).standard_normal((1, side, side, 3)).astype(np.float32)
    want = torch_output(reference, x)
    got = np.array(model.eval()(mx.array(x)))
    assert got.shape == want.shape
    error = relative_error(got, want)
    print(f"{name}: max relative error {error:.2e}")
    assert error <= 1e-4, f"{name}: {error:.2e}"


def test_timm_resnet_names_load_like_torchvision(tmp_path):
    reference = ref.randomize(ref.resnet18(num_classes=5), seed=1)
    path = save_state_dict(reference, tmp_path / "timm.safetensors")
    model = resnet18(num_classes=5)
    report = load_pretrained(model, path, source="timm")
    assert report.skipped == () and any(k.endswith("num_batches_tracked") for k in report.ignored)
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    assert relative_error(np.array(model.eval()(mx.array(x))), torch_output(reference, x)) < 1e-4


def test_strict_reports_mismatched_head_and_loads_nothing(tmp_path):
    path = save_state_dict(
        ref.randomize(ref.resnet18(num_classes=1000)), tmp_path / "r.safetensors"
    )
    model = resnet18(num_classes=10)
    before = np.array(model.conv1.weight)
    with pytest.raises(ValueError) as caught:
        load_pretrained(model, path)
    message = str(caught.value)
    assert "fc.weight: (1000, 512) -> (10, 512)" in message and "strict=False" in message
    assert "Received: path=" in message
    np.testing.assert_array_equal(np.array(model.conv1.weight), before)


def test_non_strict_loads_the_backbone_and_lists_the_new_head(tmp_path):
    reference = ref.randomize(ref.resnet18(num_classes=1000))
    path = save_state_dict(reference, tmp_path / "r.safetensors")
    model = resnet18(num_classes=10)
    head = np.array(model.fc.weight)
    report = load_pretrained(model, path, strict=False)
    assert report.mismatched == ("fc.bias: (1000,) -> (10,)", "fc.weight: (1000, 512) -> (10, 512)")
    assert report.missing == () and report.unexpected == ()
    assert "mismatched shape (skipped): fc.bias" in str(report)
    np.testing.assert_array_equal(np.array(model.fc.weight), head)
    want = reference.conv1.weight.detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.array(model.conv1.weight), want)
    np.testing.assert_array_equal(
        np.array(model.layer1[0].bn1.running_var), reference.layer1[0].bn1.running_var.numpy()
    )


def test_imagenet_backbone_into_a_segmentation_model(tmp_path):
    # torchvision's `weights_backbone`: MobileNetV3-Large `features.*` become `backbone.*`.
    classifier = ref.randomize(ref.MobileNetV3(width_mult=0.25, dilated=True))
    path = save_state_dict(classifier, tmp_path / "mnv3.safetensors")
    model = lraspp_mobilenet_v3_large(2, width_mult=0.25)
    report = load_pretrained(model, path, strict=False)
    assert {k.split(".")[0] for k in report.loaded} == {"backbone"}
    assert {k.split(".")[0] for k in report.missing} == {"classifier"}
    assert report.unexpected and all(k.startswith("classifier.") for k in report.unexpected)
    want = classifier.features[4].block[2].fc1.weight.detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.array(model.backbone[4].block[2].fc1.weight), want)


def test_bad_arguments_name_the_argument_and_echo_it(tmp_path):
    model = resnet18(num_classes=2)
    with pytest.raises(ValueError, match=r"weights_only=True.*Received: path='m.pth'|m\.pth"):
        load_pretrained(model, "m.pth")
    with pytest.raises(ValueError, match="Received: source='keras'"):
        load_pretrained(model, tmp_path / "x.safetensors", source="keras")
    with pytest.raises(FileNotFoundError, match="Received: path="):
        load_pretrained(model, tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match=r"\.safetensors.*Received: path='w\.npz'"):
        load_pretrained(model, "w.npz")
    with pytest.raises(TypeError, match="Received: strict='yes'"):
        load_pretrained(model, "w.safetensors", strict="yes")
    with pytest.raises(ValueError, match="source='timm' is supported for the ResNets"):
        load_pretrained(
            lraspp_mobilenet_v3_large(2, width_mult=0.25), "w.safetensors", source="timm"
        )


def test_pickle_error_gives_a_runnable_recipe(tmp_path):
    reference = ref.randomize(ref.resnet18(num_classes=3))
    checkpoint = tmp_path / "model.pth"
    torch.save(reference.state_dict(), checkpoint)
    with pytest.raises(ValueError) as caught:
        load_pretrained(resnet18(num_classes=3), checkpoint)
    recipe = str(caught.value).split("installed: ", 1)[1]
    assert recipe.startswith("python -c ")
    argv = shlex.split(recipe)
    argv[0] = sys.executable
    argv[-2:] = [str(checkpoint), str(tmp_path / "model.safetensors")]
    subprocess.run(argv, check=True, cwd=tmp_path)
    assert load_pretrained(resnet18(num_classes=3), tmp_path / "model.safetensors").skipped == ()


def test_folded_normalization_takes_raw_pixels(tmp_path):
    # torchvision's stem on normalised pixels against the folded mlxkit stem on raw [0, 1] ones.
    reference = ref.randomize(ref.resnet18(num_classes=4), seed=2)
    model = resnet18(num_classes=4)
    load_pretrained(model, save_state_dict(reference, tmp_path / "r.safetensors"))
    fold_input_normalization(model.conv1, model.bn1)
    pixels = np.random.default_rng(2).random((1, 32, 32, 3), dtype=np.float32)
    normalised = ((pixels - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32)
    with torch.no_grad():
        want = reference.bn1(reference.conv1(torch.from_numpy(normalised.transpose(0, 3, 1, 2))))
    want = want.numpy().transpose(0, 2, 3, 1)
    got = np.array(model.eval().bn1(model.conv1(mx.array(pixels))))
    # The 7x7 stride-2 conv's padding of 3 reaches two output rows/columns in from each edge.
    assert relative_error(got[:, 2:-2, 2:-2], want[:, 2:-2, 2:-2]) < 1e-5
    assert relative_error(got[:, :1], want[:, :1]) > 1e-2  # the documented border difference


# ------------------------------------------------------------------------- fine-tuning


def segmentation_data(count: int = 8, side: int = 32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((count, side, side, 3)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int32)
    return x, y


def snapshot(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def test_plain_freeze_still_updates_batch_norm_statistics():
    # Why `freeze_backbone` exists: MLX's freeze() stops gradients, not BatchNorm's averaging.
    layer = nn.BatchNorm(3)
    layer.freeze()
    layer.train()(mx.ones((4, 3)) * 5)
    assert layer.running_mean.tolist() != [0.0, 0.0, 0.0]


def test_frozen_backbone_is_unchanged_by_fit_and_the_head_learns(tmp_path):
    reference = ref.randomize(ref.LRASPP(21, width_mult=0.25))
    path = save_state_dict(reference, tmp_path / "lraspp.safetensors")
    model = lraspp_mobilenet_v3_large(2, width_mult=0.25)
    report = load_pretrained(model, path, strict=False)
    assert {m.split(":")[0] for m in report.mismatched} == {
        "classifier.low_classifier.weight",
        "classifier.low_classifier.bias",
        "classifier.high_classifier.weight",
        "classifier.high_classifier.bias",
    }
    freeze_backbone(model.backbone)
    assert {k.split(".")[0] for k, _ in tree_flatten(model.trainable_parameters())} == {
        "classifier"
    }
    backbone = snapshot(model.backbone)  # weights and BatchNorm running statistics
    head = snapshot(model.classifier)
    x, y = segmentation_data()
    trainer = mlxkit.Trainer(model, optim.Adam(learning_rate=1e-2), loss="cross_entropy")
    trainer.fit(x, y, batch_size=4, epochs=2, verbose=0, seed=0)
    assert any(key.endswith("running_mean") for key in backbone)
    for key, value in snapshot(model.backbone).items():
        np.testing.assert_array_equal(value, backbone[key], err_msg=key)
    changed = [k for k, v in snapshot(model.classifier).items() if not np.array_equal(v, head[k])]
    assert "cbr.1.running_mean" in changed and "low_classifier.weight" in changed
    # Only the trainable parameters have optimizer state.
    state_keys = {k.split(".")[0] for k, _ in tree_flatten(trainer.optimizer.state)}
    assert "backbone" not in state_keys


def test_frozen_batch_norm_matches_eval_mode_and_survives_train():
    layer = nn.BatchNorm(4)
    layer.update(
        {"running_mean": mx.array([0.5, -1.0, 2.0, 0.0]), "running_var": mx.array([2.0, 0.5, 1, 4])}
    )
    x = mx.random.normal((3, 5, 5, 4))
    want = np.array(layer.eval()(x))
    frozen = FrozenBatchNorm.from_batch_norm(layer)
    np.testing.assert_allclose(np.array(frozen.train()(x)), want, rtol=1e-6)
    assert sorted(k for k, _ in tree_flatten(frozen.parameters())) == [
        "bias",
        "running_mean",
        "running_var",
        "weight",
    ]
    frozen.unfreeze()  # weights train again; the statistics stay frozen, as in nn.BatchNorm
    assert sorted(k for k, _ in tree_flatten(frozen.trainable_parameters())) == ["bias", "weight"]


def test_head_learning_rate_with_multi_optimizer():
    model = lraspp_mobilenet_v3_large(2, width_mult=0.25)
    freeze_backbone(model.backbone)
    for block in model.backbone:  # fine-tune everything, statistics still pinned
        for module in block if isinstance(block, list) else [block]:
            module.unfreeze()
    backbone = snapshot(model.backbone)
    head = snapshot(model.classifier)
    optimizer = optim.MultiOptimizer(
        [optim.Adam(learning_rate=1e-2), optim.Adam(learning_rate=0.0)],
        [lambda path, _: path.startswith("classifier.")],
    )
    x, y = segmentation_data()
    mlxkit.Trainer(model, optimizer, loss="cross_entropy").fit(
        x, y, batch_size=4, epochs=1, verbose=0, seed=0
    )
    for key, value in snapshot(model.backbone).items():
        np.testing.assert_array_equal(value, backbone[key], err_msg=key)  # learning rate 0
    assert not np.array_equal(np.array(model.classifier.high_classifier.weight),
                              head["high_classifier.weight"])  # fmt: skip


def test_freeze_backbone_rejects_a_single_batch_norm():
    with pytest.raises(TypeError, match="Received: backbone=BatchNorm"):
        freeze_backbone(nn.BatchNorm(3))


# ------------------------------------------------------------------------- the examples


def test_resnet_example_fine_tunes_a_frozen_pretrained_backbone(tmp_path):
    reference = ref.randomize(ref.resnet18(), seed=3)
    weights = save_state_dict(reference, tmp_path / "resnet18.safetensors")
    out = tmp_path / "run"
    script = ROOT / "examples" / "flux" / "resnet_imagenet.py"
    stdout = run_example(
        script, "--quick", "--out", str(out), "--pretrained", weights, "--freeze-backbone"
    )
    assert "mismatched shape (skipped): fc.bias: (1000,) -> (5,)" in stdout
    trained = mx.load(str(out / "best.safetensors"))
    want = reference.layer4[1].conv2.weight.detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.array(trained["layer4.1.conv2.weight"]), want)
    np.testing.assert_array_equal(
        np.array(trained["bn1.running_mean"]), reference.bn1.running_mean.numpy()
    )
    assert trained["fc.weight"].shape == (5, 512)


def test_segmentation_example_pretrain_step(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "segmentation_example", ROOT / "examples" / "segmentation.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    reference = ref.randomize(ref.MobileNetV3(width_mult=0.25, dilated=True), seed=4)
    args = argparse.Namespace(
        pretrained=save_state_dict(reference, tmp_path / "mnv3.safetensors"),
        model="lraspp",
        width_mult=0.25,
        freeze_backbone=True,
    )
    model = lraspp_mobilenet_v3_large(2, width_mult=0.25)
    example.pretrain(model, args)
    want = reference.features[7].block[1][0].weight.detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.array(model.backbone[7].block[1][0].weight), want)
    assert isinstance(model.backbone[7].block[1][1], FrozenBatchNorm)
    # The stem takes [0, 1] pixels: ImageNet normalisation folded into its conv and BatchNorm.
    stem = reference.features[0][0].weight.detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(
        np.array(model.backbone[0][0].weight), stem / np.array(IMAGENET_STD), rtol=1e-6
    )
    assert {k.split(".")[0] for k, _ in tree_flatten(model.trainable_parameters())} == {
        "classifier"
    }
    args.width_mult = 1.0  # a file for another width is refused, not half loaded
    with pytest.raises(SystemExit, match="does not fit lraspp"):
        example.pretrain(lraspp_mobilenet_v3_large(2, width_mult=1.0), args)
