"""`.mlxfn` export and the `mlxkit export` command line."""

from __future__ import annotations

from typing import Any

from mlxkit import models
from mlxkit.export import (
    run_mlpackage_numpy,
    to_mlxfn,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.export.helpers import (
    FP32_TOLERANCE,
    leftovers,
    make_inputs,
    relative_error,
    seeded,
)

pytest.importorskip("coremltools")


# --------------------------------------------------------------------------------------------
# .mlxfn


def test_mlxfn_round_trip_is_identical(tmp_path: Any) -> None:
    model = seeded(models.depth_resnet20)
    x = make_inputs([(1, 32, 64, 3)], seed=11)[0]
    path = to_mlxfn(model, x, str(tmp_path / "depth.mlxfn"), metadata='{"name": "depth"}')
    imported, metadata = mx.import_function(path, return_metadata=True)
    np.testing.assert_array_equal(np.array(imported(x)[0]), np.array(model(x)))
    assert metadata == '{"name": "depth"}'
    assert leftovers(tmp_path) == ["depth.mlxfn"]


def test_mlxfn_rejects_bad_path_and_inputs(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"must end with `\.mlxfn`"):
        to_mlxfn(lambda x: x, mx.zeros(2), str(tmp_path / "f.bin"))
    with pytest.raises(TypeError, match="Received: example_inputs"):
        to_mlxfn(lambda x: x, "not an array", str(tmp_path / "f.mlxfn"))
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# CLI


def tiny_factory(width: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))


def test_cli_exports_with_weights(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from mlxkit.export import _cli

    model = seeded(lambda: tiny_factory(width=5))
    weights = str(tmp_path / "w.safetensors")
    model.save_weights(weights)
    parser = argparse.ArgumentParser(prog="mlxkit")
    _cli.add_parser(parser.add_subparsers(dest="command", required=True))
    # The same model, weights and input shape for both formats.
    common = [
        "--model",
        "tests.export.test_mlxfn_and_cli:tiny_factory",
        "--kwargs",
        '{"width": 5}',
        "--weights",
        weights,
        "--input-shape",
        "1,8,8,3",
    ]
    out = str(tmp_path / "cli.mlpackage")
    args = parser.parse_args(["export", *common, "-o", out, "--precision", "float32"])
    assert args.run(args) == 0
    assert "max_pool" in capsys.readouterr().out
    x = make_inputs([(1, 8, 8, 3)], seed=12)[0]
    got = run_mlpackage_numpy(out, np.array(x))["output"]
    assert relative_error(got, np.array(model(x))) < FP32_TOLERANCE

    mlxfn = str(tmp_path / "cli.mlxfn")
    args = parser.parse_args(["export", "--format", "mlxfn", *common, "-o", mlxfn])
    assert args.run(args) == 0
    np.testing.assert_array_equal(np.array(mx.import_function(mlxfn)(x)[0]), np.array(model(x)))

    args = parser.parse_args(
        [
            "export",
            "--model",
            "tests.export.test_mlxfn_and_cli:nope",
            "--input-shape",
            "1,8,8,3",
            "-o",
            str(tmp_path / "x.mlpackage"),
        ]
    )
    assert args.run(args) == 1
    assert "no attribute 'nope'" in capsys.readouterr().err
