"""Llama: a decoder-only transformer language model, with a KV cache and greedy generation.

Source: the Llama architecture (Touvron et al., 2023, "LLaMA: Open and Efficient Foundation
Language Models"; grouped-query attention from Llama 2) as MLX's `mlx-examples/llms` writes it:
pre-norm blocks with RMSNorm, rotary position embeddings (RoPE, the non-interleaved "half" form),
grouped-query attention and a SwiGLU MLP, then a final RMSNorm and an untied output projection.

Two ways to run it:
- `model(tokens, cache)` is the MLX path: a growing `KVCache` per layer, used by `generate`.
- `model.step(tokens, position, key_cache, value_cache)` is the same network over a fixed-size
  cache passed in and returned: one function that both prefills (many tokens) and decodes (one
  token), which is what a Core ML export with the cache as state needs
  (`mlxkit.export.to_coreml(..., states=...)`).

Both caches hold keys and values in float16 (Core ML states are float16), so the two paths agree.
Positions and masks are computed from the inputs, never from a constant of the sequence length,
so `step` exports with a flexible length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlxkit._validation import check_int

import mlx.core as mx
import mlx.nn as nn
import numpy as np

__all__ = ["KVCache", "Llama", "generate", "llama"]

# Masked attention scores: exp(-1e9 - max) is exactly 0 in float32, with no inf arithmetic.
_MASKED = -1e9
CACHE_DTYPE = mx.float16


def rotary_embedding(x: mx.array, positions: mx.array, base: float) -> mx.array:
    """Rotates the last axis of `x` (B, heads, T, head_dim) by `positions` (B, T).

    The "half" RoPE (GPT-NeoX / Llama in MLX): dimension `i` pairs with `i + head_dim / 2`.
    """
    half = x.shape[-1] // 2
    inverse_frequency = mx.array(
        [base ** (-2.0 * i / x.shape[-1]) for i in range(half)], dtype=mx.float32
    )
    angles = positions.astype(mx.float32)[:, None, :, None] * inverse_frequency
    cos, sin = mx.cos(angles), mx.sin(angles)
    x1, x2 = x[..., :half], x[..., half:]
    return mx.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class KVCache:
    """A growing per-layer cache of keys and values (B, kv_heads, length, head_dim), float16.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.llama import KVCache
        >>> cache = KVCache()
        >>> keys, values = cache.update(mx.zeros((1, 2, 3, 8)), mx.zeros((1, 2, 3, 8)))
        >>> cache.offset, keys.shape
        (3, (1, 2, 3, 8))
    """

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Appends new keys and values; returns the whole cache (as float32)."""
        keys, values = keys.astype(CACHE_DTYPE), values.astype(CACHE_DTYPE)
        if self.keys is None or self.values is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        self.offset += keys.shape[2]
        return self.keys.astype(mx.float32), self.values.astype(mx.float32)


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions."""

    def __init__(self, dims: int, num_heads: int, num_kv_heads: int, rope_base: float):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dims // num_heads
        self.rope_base = rope_base
        self.q_proj = nn.Linear(dims, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dims, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dims, num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dims, bias=False)

    def project(self, x: mx.array, positions: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Queries (B, heads, T, hd), keys and values (B, kv_heads, T, hd), rotated."""
        batch, length, _ = x.shape

        def heads(t: mx.array, count: int) -> mx.array:
            return t.reshape(batch, length, count, self.head_dim).transpose(0, 2, 1, 3)

        queries = heads(self.q_proj(x), self.num_heads)
        keys = heads(self.k_proj(x), self.num_kv_heads)
        values = heads(self.v_proj(x), self.num_kv_heads)
        queries = rotary_embedding(queries, positions, self.rope_base)
        keys = rotary_embedding(keys, positions, self.rope_base)
        return queries, keys, values

    def attend(
        self, queries: mx.array, keys: mx.array, values: mx.array, allowed: mx.array
    ) -> mx.array:
        """Attention of queries over keys where `allowed` (B, 1, 1, T, S) is true; (B, T, dims)."""
        batch, _, length, _ = queries.shape
        groups = self.num_heads // self.num_kv_heads
        # (B, kv, groups, T, hd): each kv head serves `groups` query heads, with no copies.
        grouped = queries.reshape(batch, self.num_kv_heads, groups, length, self.head_dim)
        scores = (grouped * (1.0 / math.sqrt(self.head_dim))) @ keys[:, :, None].swapaxes(-1, -2)
        scores = mx.where(allowed, scores, _MASKED)
        weights = mx.softmax(scores, axis=-1)
        out = weights @ values[:, :, None]
        out = out.reshape(batch, self.num_heads, length, self.head_dim).transpose(0, 2, 1, 3)
        return self.o_proj(out.reshape(batch, length, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`."""

    def __init__(self, dims: int, hidden_dims: int):
        super().__init__()
        self.gate_proj = nn.Linear(dims, hidden_dims, bias=False)
        self.up_proj = nn.Linear(dims, hidden_dims, bias=False)
        self.down_proj = nn.Linear(hidden_dims, dims, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: `x + attention(norm(x))`, then `x + mlp(norm(x))`."""

    def __init__(self, dims: int, num_heads: int, num_kv_heads: int, hidden_dims: int, **kw):
        super().__init__()
        self.self_attn = Attention(dims, num_heads, num_kv_heads, kw["rope_base"])
        self.mlp = MLP(dims, hidden_dims)
        self.input_layernorm = nn.RMSNorm(dims, eps=kw["norm_eps"])
        self.post_attention_layernorm = nn.RMSNorm(dims, eps=kw["norm_eps"])


class Llama(nn.Module):
    """A Llama language model over integer tokens, returning logits (B, T, vocab_size).

    Build it with `llama(...)`. `model(tokens)` is causal over the whole sequence; pass a list
    of `KVCache` (from `make_cache`) to continue a sequence one chunk at a time.

    Args:
        vocab_size: Number of token ids.
        dims: Model width; a multiple of `num_heads`.
        num_layers: Transformer blocks.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (grouped-query attention); divides `num_heads`.
        hidden_dims: Width of the SwiGLU MLP.
        rope_base: RoPE's frequency base.
        norm_eps: RMSNorm's epsilon.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import llama
        >>> model = llama(vocab_size=32, dims=64, num_layers=1, num_heads=4, num_kv_heads=2)
        >>> model(mx.array([[1, 2, 3]])).shape
        (1, 3, 32)
    """

    def __init__(
        self,
        vocab_size: int,
        dims: int,
        num_layers: int,
        num_heads: int,
        num_kv_heads: int,
        hidden_dims: int,
        *,
        rope_base: float = 10000.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.vocab_size, self.dims = vocab_size, dims
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dims // num_heads
        self.embed_tokens = nn.Embedding(vocab_size, dims)
        self.layers = [
            TransformerBlock(
                dims, num_heads, num_kv_heads, hidden_dims, rope_base=rope_base, norm_eps=norm_eps
            )
            for _ in range(num_layers)
        ]
        self.norm = nn.RMSNorm(dims, eps=norm_eps)
        self.lm_head = nn.Linear(dims, vocab_size, bias=False)

    def make_cache(self) -> list[KVCache]:
        """One empty `KVCache` per layer."""
        return [KVCache() for _ in self.layers]

    def __call__(self, tokens: mx.array, cache: Sequence[KVCache] | None = None) -> mx.array:
        batch, length = tokens.shape
        offset = cache[0].offset if cache is not None else 0
        positions = mx.broadcast_to(mx.arange(offset, offset + length), (batch, length))
        x = self.embed_tokens(tokens)
        for index, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            queries, keys, values = layer.self_attn.project(h, positions)
            if cache is not None:
                keys, values = cache[index].update(keys, values)
            key_positions = mx.arange(keys.shape[2])
            allowed = key_positions[None, None, None, None, :] <= positions[:, None, None, :, None]
            x = x + layer.self_attn.attend(queries, keys, values, allowed)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))

    def cache_shape(self, max_length: int, batch_size: int = 1) -> tuple[int, ...]:
        """Shape of `step`'s caches: (num_layers, batch, kv_heads, max_length, head_dim)."""
        return (len(self.layers), batch_size, self.num_kv_heads, max_length, self.head_dim)

    def step(
        self,
        tokens: mx.array,
        position: mx.array,
        key_cache: mx.array,
        value_cache: mx.array,
    ) -> tuple[mx.array, mx.array, mx.array]:
        """Runs `tokens` (B, T) at positions `position + 0..T-1` over fixed-size caches.

        The caches (`cache_shape(max_length)`, float16) hold earlier keys and values; the new
        ones are written at their positions and both caches are returned with the logits. The
        same call prefills a prompt (T tokens) and decodes (T = 1), and it computes positions
        and masks from its inputs only, so it traces to a graph with no length-sized constant.

        Args:
            tokens: Token ids (B, T), int32.
            position: (B,) int32, the position of the first token.
            key_cache: Keys (num_layers, B, kv_heads, max_length, head_dim), float16.
            value_cache: Values, same shape.

        Returns:
            `(logits, key_cache, value_cache)`, logits (B, T, vocab_size) float32.

        Example:
            >>> import mlx.core as mx
            >>> from mlxkit.models import llama
            >>> model = llama(vocab_size=32, dims=64, num_layers=1, num_heads=4, num_kv_heads=2)
            >>> cache = mx.zeros(model.cache_shape(16), mx.float16)
            >>> logits, keys, values = model.step(mx.array([[1, 2]]), mx.array([0]), cache, cache)
            >>> logits.shape, keys.shape
            ((1, 2, 32), (1, 1, 2, 16, 16))
        """
        max_length = key_cache.shape[3]
        # position + 0..T-1 from the tokens themselves (a cumulative count), not from arange(T).
        count = mx.cumsum(tokens * 0 + 1, axis=1)
        positions = position[:, None] + count - 1
        slots = mx.arange(max_length)
        # (B, T, S): token t is written to slot positions[t]; keys are visible up to it.
        written = (positions[:, :, None] == slots).astype(mx.float32)
        kept = 1.0 - written.sum(axis=1)[:, None, :, None]
        allowed = (slots <= positions[:, :, None])[:, None, None]
        x = self.embed_tokens(tokens)
        new_keys, new_values = [], []
        for index, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            queries, keys, values = layer.self_attn.project(h, positions)

            def write(cache: mx.array, new: mx.array) -> mx.array:
                # cache * kept + one-hot(positions)^T @ new: exact, and fine with any T.
                scattered = written[:, None].swapaxes(-1, -2) @ new.astype(CACHE_DTYPE).astype(
                    mx.float32
                )
                return cache.astype(mx.float32) * kept + scattered

            keys = write(key_cache[index], keys)
            values = write(value_cache[index], values)
            new_keys.append(keys.astype(CACHE_DTYPE))
            new_values.append(values.astype(CACHE_DTYPE))
            x = x + layer.self_attn.attend(queries, keys, values, allowed)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = self.lm_head(self.norm(x))
        return logits, mx.stack(new_keys), mx.stack(new_values)


def llama(
    *,
    vocab_size: int,
    dims: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    hidden_dims: int | None = None,
    rope_base: float = 10000.0,
    norm_eps: float = 1e-5,
) -> Llama:
    """Builds a `Llama` (see the class for the arguments; `hidden_dims` defaults to `2 * dims`).

    Example:
        >>> from mlxkit.models import llama
        >>> model = llama(vocab_size=96, dims=64, num_layers=2, num_heads=4, num_kv_heads=1)
        >>> model.num_kv_heads, len(model.layers)
        (1, 2)
    """
    vocab_size = check_int(vocab_size, "vocab_size", owner="llama")
    dims = check_int(dims, "dims", owner="llama")
    num_layers = check_int(num_layers, "num_layers", owner="llama")
    num_heads = check_int(num_heads, "num_heads", owner="llama")
    num_kv_heads = check_int(num_kv_heads, "num_kv_heads", owner="llama")
    hidden_dims = check_int(
        2 * dims if hidden_dims is None else hidden_dims, "hidden_dims", owner="llama"
    )
    if dims % num_heads or (dims // num_heads) % 2:
        raise ValueError(
            "`dims` must be a multiple of `num_heads` with an even head size (RoPE rotates "
            f"pairs). Received: dims={dims}, num_heads={num_heads}."
        )
    if num_heads % num_kv_heads:
        raise ValueError(
            "`num_kv_heads` must divide `num_heads` (each key/value head serves a group of "
            f"query heads). Received: num_heads={num_heads}, num_kv_heads={num_kv_heads}."
        )
    return Llama(
        vocab_size,
        dims,
        num_layers,
        num_heads,
        num_kv_heads,
        hidden_dims,
        rope_base=rope_base,
        norm_eps=norm_eps,
    )


def generate(model: Llama, prompt: mx.array, max_tokens: int) -> list[int]:
    """Greedy decoding with a `KVCache`: the prompt (T,) or (1, T) in one pass, then one token
    at a time; returns the `max_tokens` new token ids.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import llama
        >>> from mlxkit.models.llama import generate
        >>> model = llama(vocab_size=32, dims=64, num_layers=1, num_heads=4, num_kv_heads=2)
        >>> len(generate(model, mx.array([1, 2, 3]), max_tokens=5))
        5
    """
    max_tokens = check_int(max_tokens, "max_tokens", owner="generate")
    tokens = prompt.reshape(1, -1) if prompt.ndim == 1 else prompt
    if tokens.ndim != 2 or tokens.shape[0] != 1 or tokens.shape[1] == 0:
        raise ValueError(
            "`prompt` must hold at least one token id, shaped (T,) or (1, T). "
            f"Received: prompt.shape={tuple(prompt.shape)}."
        )
    cache = model.make_cache()
    logits = model(tokens, cache)
    out: list[int] = []
    while True:
        token = mx.argmax(logits[:, -1, :], axis=-1)
        out.append(int(np.array(token)[0]))
        if len(out) == max_tokens:  # no forward pass for logits nobody reads
            return out
        logits = model(token[:, None], cache)
