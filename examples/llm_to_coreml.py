"""Train a tiny Llama, quantize it to 4 bits, ship it to Core ML with its KV cache as state.

Run:
    python examples/llm_to_coreml.py            # ~300 training steps
    python examples/llm_to_coreml.py --quick    # a few steps, 8 tokens (the CI smoke test)

Steps: train a byte-level Llama (grouped-query attention, RoPE, RMSNorm, SwiGLU) with the
mlxkit Trainer on a public-domain paragraph (Dickens, "A Tale of Two Cities", 1859); quantize
it with `nn.quantize(bits=4, group_size=64)`; export its `step` (a prompt or one token: a
flexible length) with the KV cache as Core ML state (iOS 18); then generate greedily with MLX
and through the exported package (the NumPy interpreter, which runs anywhere) and check the two
agree token for token. The tutorial
docs/examples/llm_to_coreml.md shows the Swift loop that drives the package on a device.
"""

from __future__ import annotations

import argparse
import os

from mlxkit import Trainer
from mlxkit.export import new_state, run_mlpackage_numpy, to_coreml
from mlxkit.models.llama import generate, llama

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "two_cities.txt")


def windows(data: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-byte prediction pairs: every window of `length` bytes and the same shifted by one."""
    starts = np.arange(0, len(data) - length - 1, 2)
    x = np.stack([data[s : s + length] for s in starts])
    y = np.stack([data[s + 1 : s + length + 1] for s in starts])
    return x, y


def generate_coreml(path: str, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy decoding through the package: the same loop as the Swift one in the tutorial."""
    state = new_state(path)  # Swift: let state = model.makeState()
    inputs = {"input_ids": np.array([prompt], np.int32), "position": np.array([0])}
    logits = run_mlpackage_numpy(path, inputs, state=state)["logits"]  # prefill, one prediction
    position = len(prompt)
    tokens = []
    for _ in range(max_tokens):
        token = int(np.argmax(logits[0, -1]))
        tokens.append(token)
        inputs = {"input_ids": np.array([[token]], np.int32), "position": np.array([position])}
        logits = run_mlpackage_numpy(path, inputs, state=state)["logits"]
        position += 1
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few training steps (smoke test)")
    parser.add_argument("--output", default="tiny_llama.mlpackage")
    args = parser.parse_args()

    # 1. Train: bytes in, next byte out.
    with open(CORPUS, "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8).astype(np.int32)
    x, y = windows(data, 32)
    mx.random.seed(0)
    model = llama(vocab_size=128, dims=256, num_layers=2, num_heads=4, num_kv_heads=2)

    def loss(logits: mx.array, targets: mx.array) -> mx.array:
        return nn.losses.cross_entropy(logits, targets, reduction="mean")

    trainer = Trainer(model, optim.Adam(learning_rate=3e-3), loss)
    history = trainer.fit(x, y, batch_size=32, epochs=1 if args.quick else 30, verbose=0)
    print(f"training loss: {history.history['loss'][0]:.3f} -> {history.history['loss'][-1]:.3f}")

    # 2. Quantize: 4-bit weights in groups of 64 (dims are multiples of 64).
    nn.quantize(model, group_size=64, bits=4)
    model.eval()
    mx.eval(model.parameters())
    quantized_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))

    # 3. Export `step` with a flexible token count (a prompt or one token) and the two caches
    #    as Core ML states.
    max_length = 128
    cache = mx.zeros(model.cache_shape(max_length), mx.float16)
    result = to_coreml(
        model.step,
        (mx.zeros((1, 8), mx.int32), mx.zeros((1,), mx.int32), cache, cache),
        args.output,
        input_names=["input_ids", "position", "key_cache", "value_cache"],
        output_names=["logits", "new_key_cache", "new_value_cache"],
        states={"key_cache": "new_key_cache", "value_cache": "new_value_cache"},
        flexible={"input_ids": {1: (1, max_length)}},
        compute_precision="float32",
    )
    print(result.report)
    size = result.report.file_size_bytes
    print(f"package {size:,} bytes = {size / quantized_bytes:.2f}x the quantized weights")

    # 4. Generate: MLX (a growing cache) against the package (a fixed-size state).
    prompt = list(b"It was the ")
    max_tokens = 8 if args.quick else 32
    want = generate(model, mx.array(prompt), max_tokens=max_tokens)
    got = generate_coreml(args.output, prompt, max_tokens=max_tokens)
    print("MLX:    ", repr(bytes(want).decode("ascii", "replace")))
    print("Core ML:", repr(bytes(got).decode("ascii", "replace")))
    if got != want:
        raise SystemExit("The exported package generated different tokens.")
    print("token for token equal")


if __name__ == "__main__":
    main()
