"""A language model to Core ML: quantized weights, a KV cache as state, greedy generation.

References are MLX itself: `mx.dequantize` for the compressed weights (bit for bit), and
`mlxkit.models.llama.generate` (a growing MLX cache) for the tokens the exported package must
produce through the NumPy interpreter (a fixed-size Core ML state).
"""

from __future__ import annotations

import os

from mlxkit import Trainer
from mlxkit.export import new_state, run_mlpackage_numpy, to_coreml
from mlxkit.export._mil_numpy import load_mlpackage, run_program
from mlxkit.models.llama import Llama, generate, llama

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

pytest.importorskip("coremltools")

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "data", "two_cities.txt")
MAX_LENGTH = 80


def _windows(length: int) -> tuple[np.ndarray, np.ndarray]:
    with open(CORPUS, "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8).astype(np.int32)
    starts = np.arange(0, len(data) - length - 1, 3)
    x = np.stack([data[s : s + length] for s in starts])
    y = np.stack([data[s + 1 : s + length + 1] for s in starts])
    return x, y


@pytest.fixture(scope="module")
def trained() -> Llama:
    """The tiny Llama after a few Trainer steps on byte-level text (so weights are not random)."""
    mx.random.seed(0)
    model = llama(vocab_size=128, dims=256, num_layers=2, num_heads=4, num_kv_heads=2)
    x, y = _windows(32)

    def loss(logits: mx.array, targets: mx.array) -> mx.array:
        return nn.losses.cross_entropy(logits, targets, reduction="mean")

    trainer = Trainer(model, optim.Adam(learning_rate=3e-3), loss)
    history = trainer.fit(x, y, batch_size=32, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] < np.log(128), losses
    model.eval()
    return model


def _export_step(model: Llama, path: str, prompt: mx.array, **options: object) -> object:
    cache = mx.zeros(model.cache_shape(MAX_LENGTH), mx.float16)
    return to_coreml(
        model.step,
        (prompt, mx.array([0], dtype=mx.int32), cache, cache),
        path,
        input_names=["input_ids", "position", "key_cache", "value_cache"],
        output_names=["logits", "new_key_cache", "new_value_cache"],
        states={"key_cache": "new_key_cache", "value_cache": "new_value_cache"},
        compute_precision="float32",
        **options,  # type: ignore[arg-type]
    )


def _generate_numpy(path: str, prompt: np.ndarray, max_tokens: int) -> list[int]:
    """Greedy decoding through the package: the prompt in one prediction (prefill), then one
    token per prediction, the cache living in the package's state."""
    program = load_mlpackage(path)
    state = new_state(path)
    position = np.array([0], dtype=np.int32)
    inputs = {"input_ids": prompt, "position": position}
    logits = run_program(program, inputs, state)["logits"]
    position = position + prompt.shape[1]
    tokens: list[int] = []
    for _ in range(max_tokens):
        token = int(np.argmax(logits[0, -1]))
        tokens.append(token)
        inputs = {"input_ids": np.array([[token]], np.int32), "position": position}
        logits = run_program(program, inputs, state)["logits"]
        position = position + 1
    return tokens


def test_cached_step_and_generate_agree_with_the_full_forward(trained: Llama) -> None:
    tokens = mx.array([list(b"It was the age of ")], dtype=mx.int32)
    full = np.array(trained(tokens))
    cache = mx.zeros(trained.cache_shape(MAX_LENGTH), mx.float16)
    first, keys, values = trained.step(tokens[:, :7], mx.array([0]), cache, cache)
    rest, _, _ = trained.step(tokens[:, 7:], mx.array([7]), keys, values)
    stepped = np.concatenate([np.array(first), np.array(rest)], axis=1)
    # The caches hold float16 keys and values: equal to the uncached forward to ~1e-3.
    np.testing.assert_allclose(stepped, full, atol=2e-2 * np.abs(full).max())
    kv = trained.make_cache()
    chunked = np.concatenate(
        [np.array(trained(tokens[:, :7], kv)), np.array(trained(tokens[:, 7:], kv))], axis=1
    )
    np.testing.assert_allclose(chunked, stepped, atol=1e-5 * np.abs(full).max())
    assert len(generate(trained, tokens[0], 4)) == 4


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_weights_decompress_to_mx_dequantize_exactly(tmp_path, bits: int) -> None:
    mx.random.seed(1)
    embedding = nn.QuantizedEmbedding.from_embedding(nn.Embedding(64, 128), 64, bits)
    linear = nn.QuantizedLinear.from_linear(nn.Linear(128, 192, bias=False), 64, bits)
    mx.eval(embedding.parameters(), linear.parameters())

    table = np.array(mx.dequantize(embedding.weight, embedding.scales, embedding.biases, 64, bits))
    path = str(tmp_path / "embedding.mlpackage")
    ids = mx.arange(64, dtype=mx.int32)[None]
    to_coreml(embedding, ids, path, compute_precision="float32")
    got = run_mlpackage_numpy(path, np.array(ids))["output"][0]
    assert np.array_equal(got, table)

    weight = np.array(mx.dequantize(linear.weight, linear.scales, linear.biases, 64, bits))
    path = str(tmp_path / "linear.mlpackage")
    identity = mx.eye(128)
    result = to_coreml(linear, identity, path, compute_precision="float32")
    # x = I: every output is one weight times 1 plus zeros, so the product is the weight itself.
    assert np.array_equal(run_mlpackage_numpy(path, np.array(identity))["output"], weight.T)
    assert result.report.op_counts["constexpr_blockwise_shift_scale"] == 2
    assert result.report.minimum_deployment_target == "iOS18"
    dense_bytes = 128 * 192 * 4
    assert result.report.file_size_bytes < dense_bytes * (bits + 3) / 32  # not a float copy


def test_quantized_model_below_ios18_names_the_minimum_target(tmp_path) -> None:
    linear = nn.QuantizedLinear(64, 64, bias=False, group_size=64, bits=4)
    with pytest.raises(ValueError, match="iOS18"):
        to_coreml(
            linear,
            mx.zeros((1, 64)),
            str(tmp_path / "q.mlpackage"),
            minimum_deployment_target="iOS17",
        )
    assert not os.path.exists(tmp_path / "q.mlpackage")


def test_4bit_llama_with_kv_state_generates_like_mlx(trained: Llama, tmp_path) -> None:
    model = llama(vocab_size=128, dims=256, num_layers=2, num_heads=4, num_kv_heads=2)
    model.update(trained.parameters())
    nn.quantize(model, group_size=64, bits=4)
    mx.eval(model.parameters())
    quantized_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))

    prompt = mx.array([list(b"It was the ")], dtype=mx.int32)
    path = str(tmp_path / "llama.mlpackage")
    result = _export_step(model, path, prompt, flexible={"input_ids": {1: (1, MAX_LENGTH)}})
    counts = result.report.op_counts
    assert counts["constexpr_blockwise_shift_scale"] == 2 * (2 * 7 + 2)  # 14 linears, embed, head
    assert counts["read_state"] == 2 and counts["write_state"] == 2
    assert [name for name, _, _ in result.report.inputs] == ["input_ids", "position"]
    shape = model.cache_shape(MAX_LENGTH)
    assert result.report.states == [("key_cache", shape), ("value_cache", shape)]
    assert "state  key_cache: float16 (2, 1, 2, 80, 64)" in str(result.report)
    assert result.report.file_size_bytes < 1.3 * quantized_bytes, (
        result.report.file_size_bytes,
        quantized_bytes,
    )

    want = generate(model, prompt[0], 32)
    got = _generate_numpy(path, np.array(prompt), 32)
    assert got == want


def test_flexible_length_runs_at_1_7_and_64(trained: Llama, tmp_path) -> None:
    path = str(tmp_path / "flexible.mlpackage")
    example = mx.array([list(b"It was")], dtype=mx.int32)
    result = _export_step(trained, path, example, flexible={"input_ids": {1: (1, 64)}})
    # The default shape Core ML shows for a range is its lower bound.
    assert result.report.inputs[0] == ("input_ids", (1, 1), "tensor, axis 1: 1..64")
    program = load_mlpackage(path)
    assert program.inputs[0].ranges == ((1, 1), (1, 64))
    cache = mx.zeros(trained.cache_shape(MAX_LENGTH), mx.float16)
    rng = np.random.default_rng(0)
    for length in (1, 7, 64):
        ids = rng.integers(0, 128, (1, length)).astype(np.int32)
        position = np.array([3], dtype=np.int32)  # after three earlier (zero-cache) tokens
        state = new_state(path)
        got = run_program(program, {"input_ids": ids, "position": position}, state)
        want, keys, _ = trained.step(mx.array(ids), mx.array(position), cache, cache)
        want_np = np.array(want)
        error = np.abs(got["logits"] - want_np).max() / np.abs(want_np).max()
        assert got["logits"].shape == (1, length, 128) and error < 1e-4, (length, error)
        # The new keys are written at positions 3..3+length (float16: equal to an ulp).
        keys_np = np.array(keys).astype(np.float32)
        np.testing.assert_allclose(state["key_cache"], keys_np, rtol=2e-3, atol=1e-3)
        written = np.any(state["key_cache"] != 0, axis=(0, 1, 2, 4))
        assert written.tolist() == [3 <= s < 3 + length for s in range(MAX_LENGTH)]
    with pytest.raises(ValueError, match="accepts shapes within"):
        run_program(
            program, {"input_ids": np.zeros((1, 65), np.int32), "position": position}, state
        )


def test_flexible_rejects_a_constant_built_from_the_length(trained: Llama, tmp_path) -> None:
    # The plain forward builds positions with mx.arange(T): one program cannot follow T.
    with pytest.raises(ValueError, match="constant from the size of a flexible input"):
        to_coreml(
            trained,
            mx.zeros((1, 5), mx.int32),
            str(tmp_path / "plain.mlpackage"),
            flexible={"input": {1: (1, 32)}},
        )
    assert not os.path.exists(tmp_path / "plain.mlpackage")


def test_enumerated_sizes(tmp_path) -> None:
    def double_rows(x: mx.array) -> mx.array:
        return mx.cumsum(x * 2.0, axis=1) - mx.max(x, axis=1, keepdims=True)

    path = str(tmp_path / "enumerated.mlpackage")
    to_coreml(
        double_rows,
        mx.ones((1, 4)),
        path,
        flexible={"input": {1: [2, 4, 8]}},
        compute_precision="float32",
    )
    for size in (2, 4, 8):
        x = np.arange(size, dtype=np.float32)[None]
        got = run_mlpackage_numpy(path, x)["output"]
        np.testing.assert_array_equal(got, np.array(double_rows(mx.array(x))))
    with pytest.raises(ValueError, match="accepts the shapes"):
        run_mlpackage_numpy(path, np.zeros((1, 6), np.float32))


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_states_accumulate_across_predictions(tmp_path, precision: str) -> None:
    def accumulate(x: mx.array, total: mx.array, count: mx.array) -> tuple[mx.array, ...]:
        new_total = (total.astype(mx.float32) + x).astype(mx.float16)
        new_count = (count.astype(mx.float32) + 1.0).astype(mx.float16)
        return new_total.astype(mx.float32) / new_count.astype(mx.float32), new_total, new_count

    path = str(tmp_path / "running_mean.mlpackage")
    zeros = mx.zeros((3,), mx.float16)
    result = to_coreml(
        accumulate,
        (mx.ones((3,)), zeros, zeros),
        path,
        input_names=["x", "total", "count"],
        output_names=["mean", "new_total", "new_count"],
        states={"total": "new_total", "count": "new_count"},
        compute_precision=precision,
    )
    assert [name for name, _, _ in result.report.inputs] == ["x"]
    state = new_state(path)
    assert sorted(state) == ["count", "total"]
    for x in ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [5.0, 5.0, 5.0]):
        mean = run_mlpackage_numpy(path, np.array(x, np.float32), state=state)["mean"]
    np.testing.assert_allclose(mean, [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(state["count"], [3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="new_state"):
        run_mlpackage_numpy(path, np.ones(3, np.float32))
