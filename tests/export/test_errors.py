"""Errors: argument validation, unsupported primitives, nothing left half-written."""

from __future__ import annotations

import inspect
import os
from typing import Any

from mlxkit.export import (
    ImageInput,
    UnsupportedOperationError,
    run_mlpackage_numpy,
    to_coreml,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.export.helpers import (
    FP32_TOLERANCE,
    leftovers,
    relative_error,
)

pytest.importorskip("coremltools")


# --------------------------------------------------------------------------------------------
# Errors: clear messages, nothing written


def test_unsupported_primitives_are_listed_together(tmp_path: Any) -> None:
    target = tmp_path / "bad.mlpackage"

    def fn(x: mx.array) -> mx.array:
        # Supported ops around the unsupported ones must not hide them.
        spectrum = mx.abs(mx.fft.rfft(nn.relu(x)))[:2]
        return spectrum * 2 + x.at[mx.array([0, 1])].add(1.0)[:2]

    with pytest.raises(UnsupportedOperationError) as info:
        to_coreml(fn, mx.zeros((4,)), str(target))
    assert {"FFT", "Scatter"} <= set(info.value.operations)
    assert "FFT" in str(info.value) and "Scatter" in str(info.value)
    assert leftovers(tmp_path) == []


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(4, 4)

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fft.rfft(self.query(x)).real  # line named in the error


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _Attention()
        self.mlp = nn.Linear(3, 4)

    def __call__(self, x: mx.array) -> mx.array:
        return self.mlp(self.attn(x))


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = [_Block(), _Block()]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = layer(x)
        return x


def test_unsupported_error_names_module_path_and_line(tmp_path: Any) -> None:
    with pytest.raises(UnsupportedOperationError) as info:
        to_coreml(_Encoder(), mx.zeros((1, 4)), str(tmp_path / "enc.mlpackage"))
    message = str(info.value)
    source = inspect.getsource(_Attention.__call__).splitlines()
    first = _Attention.__call__.__code__.co_firstlineno
    line = first + next(i for i, text in enumerate(source) if "rfft" in text)
    assert "FFT x2, in `layers.0.attn`" in message
    assert f"test_errors.py:{line}" in message
    assert "Rewrite that part" in message
    assert "captured" not in message and "mx.eval" not in message


def test_plain_function_errors_name_the_line(tmp_path: Any) -> None:
    def fn(x: mx.array) -> mx.array:
        return mx.fft.rfft(x).real

    with pytest.raises(UnsupportedOperationError, match=r"at test_errors\.py:\d+"):
        to_coreml(fn, mx.zeros((4,)), str(tmp_path / "fft.mlpackage"))


def test_unevaluated_closure_arrays_explain_the_fix(tmp_path: Any) -> None:
    weight = mx.random.normal((4, 4))  # deliberately left unevaluated
    with pytest.raises(UnsupportedOperationError, match=r"mx\.eval") as info:
        to_coreml(lambda x: x @ weight, mx.zeros((1, 4)), str(tmp_path / "lazy.mlpackage"))
    assert "inside the model" not in str(info.value)
    assert leftovers(tmp_path) == []


def test_sampling_inside_the_model_says_move_it_out(tmp_path: Any) -> None:
    class Noisy(nn.Module):
        def __call__(self, x: mx.array) -> mx.array:
            return x + mx.random.normal(x.shape)

    with pytest.raises(UnsupportedOperationError, match="sample outside the model") as info:
        to_coreml(Noisy(), mx.zeros((1, 4)), str(tmp_path / "noisy.mlpackage"))
    assert "mx.eval" not in str(info.value)


def test_reading_values_inside_the_model_is_explained(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match=r"\.item\(\)"):
        to_coreml(lambda x: x * x.sum().item(), mx.zeros((1, 4)), str(tmp_path / "i.mlpackage"))
    assert leftovers(tmp_path) == []


def test_module_parameters_are_evaluated_for_the_user(tmp_path: Any) -> None:
    model = nn.Linear(4, 2)  # fresh, lazily initialised parameters
    result = to_coreml(
        model, mx.zeros((1, 4)), str(tmp_path / "fresh.mlpackage"), compute_precision="float32"
    )
    x = np.ones((1, 4), np.float32)
    got = run_mlpackage_numpy(result.path, x)["output"]
    assert relative_error(got, np.array(model(mx.array(x)))) < FP32_TOLERANCE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "model.mlmodel"}, "must end with `.mlpackage`"),
        ({"example_inputs": [1.0]}, "Received: example_inputs"),
        ({"example_inputs": None}, "Received: example_inputs=None"),
        ({"compute_precision": "half"}, "compute_precision='half'"),
        ({"compute_units": "gpu"}, "compute_units='gpu'"),
        ({"minimum_deployment_target": "iOS99"}, "minimum_deployment_target='iOS99'"),
        ({"layout": "nchw"}, "layout='nchw'"),
        ({"input_names": ["a", "b"]}, "one name per input"),
        ({"output_names": ["bad name"]}, "identifiers"),
        ({"image_input": ImageInput()}, "needs an example of shape"),
        ({"example_inputs": mx.zeros((1, 4), dtype=mx.uint8)}, "float32, float16 or int32"),
    ],
)
def test_bad_arguments_raise_before_writing(
    tmp_path: Any, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "model": lambda x: x * 2,
        "example_inputs": mx.zeros((1, 4)),
        "path": "m.mlpackage",
    }
    arguments.update(kwargs)
    arguments["path"] = str(tmp_path / arguments["path"])
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        to_coreml(
            arguments.pop("model"),
            arguments.pop("example_inputs"),
            arguments.pop("path"),
            **arguments,
        )
    assert leftovers(tmp_path) == []


def test_failed_conversion_leaves_existing_package_untouched(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coremltools as ct

    target = tmp_path / "keep.mlpackage"
    to_coreml(lambda x: x + 1, mx.zeros((2,)), str(target), compute_precision="float32")
    before = run_mlpackage_numpy(str(target), np.zeros(2, np.float32))["output"]

    def broken_save(self: Any, path: str) -> None:
        os.makedirs(path, exist_ok=True)  # the real save replaces what is there
        with open(os.path.join(path, "partial"), "w") as f:
            f.write("half")
        raise OSError("disk full")

    monkeypatch.setattr(ct.models.MLModel, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        to_coreml(lambda x: x * 3, mx.zeros((2,)), str(target))
    assert leftovers(tmp_path) == ["keep.mlpackage"]
    after = run_mlpackage_numpy(str(target), np.zeros(2, np.float32))["output"]
    np.testing.assert_array_equal(before, after)


def test_export_replaces_an_existing_package(tmp_path: Any) -> None:
    target = str(tmp_path / "twice.mlpackage")
    to_coreml(lambda x: x + 1, mx.zeros((2,)), target, compute_precision="float32")
    to_coreml(lambda x: x * 3, mx.zeros((2,)), target, compute_precision="float32")
    got = run_mlpackage_numpy(target, np.ones(2, np.float32))["output"]
    np.testing.assert_array_equal(got, [3.0, 3.0])
    assert leftovers(tmp_path) == ["twice.mlpackage"]


def test_quantized_layers_below_ios18_name_the_target(tmp_path: Any) -> None:
    # Quantized layers export since issue 18 (tests/export/test_llm.py), from iOS 18 on.
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    nn.quantize(model, group_size=64, bits=4)
    with pytest.raises(ValueError, match="minimum_deployment_target='iOS18'"):
        to_coreml(
            model,
            mx.zeros((1, 64)),
            str(tmp_path / "q.mlpackage"),
            minimum_deployment_target="iOS16",
        )
    result = to_coreml(model, mx.zeros((1, 64)), str(tmp_path / "q.mlpackage"))
    assert result.report.minimum_deployment_target == "iOS18"
