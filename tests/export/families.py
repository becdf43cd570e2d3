"""Tiny versions of the model families MLX users train (the ml-explore/mlx-examples families),
written from their published definitions for the export tests: the layers and idioms that matter
to an exporter (masks, RoPE, grouped-query attention, relative position buckets, windowed
attention, cross-attention, GroupNorm, routing) at a few channels each.

`FAMILIES` maps a name to `(factory, example_inputs)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

DIMS = 16
HEADS = 2


def _ids(shape: tuple[int, ...], vocab: int, seed: int, pad_tail: int = 0) -> mx.array:
    ids = np.random.default_rng(seed).integers(1, vocab, size=shape).astype(np.int32)
    if pad_tail:
        ids[-1, -pad_tail:] = 0
    return mx.array(ids)


def _normal(shape: tuple[int, ...], seed: int) -> mx.array:
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _causal(length: int) -> mx.array:
    return nn.MultiHeadAttention.create_additive_causal_mask(length)


class Attention(nn.Module):
    """Multi-head attention with optional grouped-query heads and rotary positions (Llama)."""

    def __init__(self, dims: int, heads: int, kv_heads: int | None = None, rope: bool = False):
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads or heads
        self.head_dim = dims // heads
        self.q = nn.Linear(dims, dims, bias=False)
        self.k = nn.Linear(dims, self.kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dims, self.kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(dims, dims, bias=False)
        self.rope = nn.RoPE(self.head_dim) if rope else None

    def __call__(
        self, x: mx.array, context: mx.array | None = None, mask: mx.array | None = None
    ) -> mx.array:
        context = x if context is None else context
        b, n, _ = x.shape
        m = context.shape[1]
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3)
        k = self.k(context).reshape(b, m, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v(context).reshape(b, m, self.kv_heads, -1).transpose(0, 2, 1, 3)
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        if self.kv_heads != self.heads:
            k = mx.repeat(k, self.heads // self.kv_heads, axis=1)
            v = mx.repeat(v, self.heads // self.kv_heads, axis=1)
        scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        out = mx.softmax(scores, axis=-1) @ v
        return self.o(out.transpose(0, 2, 1, 3).reshape(b, n, -1))


class Block(nn.Module):
    """A pre-norm transformer block; `norm` picks LayerNorm or RMSNorm, `gated` a SwiGLU MLP."""

    def __init__(
        self,
        dims: int = DIMS,
        norm: Callable[[int], nn.Module] = nn.LayerNorm,
        gated: bool = False,
        cross: bool = False,
        **attention: Any,
    ):
        super().__init__()
        self.norm1, self.norm2 = norm(dims), norm(dims)
        self.attn = Attention(dims, HEADS, **attention)
        self.cross = Attention(dims, HEADS) if cross else None
        self.norm3 = norm(dims) if cross else None
        self.up = nn.Linear(dims, 2 * dims)
        self.gate = nn.Linear(dims, 2 * dims) if gated else None
        self.down = nn.Linear(2 * dims, dims)

    def __call__(
        self, x: mx.array, mask: mx.array | None = None, context: mx.array | None = None
    ) -> mx.array:
        x = x + self.attn(self.norm1(x), mask=mask)
        if self.cross is not None and self.norm3 is not None:
            x = x + self.cross(self.norm3(x), context)
        h = self.norm2(x)
        h = nn.silu(self.gate(h)) * self.up(h) if self.gate is not None else nn.gelu(self.up(h))
        return x + self.down(h)


class TransformerLM(nn.Module):
    """mlx-examples' transformer_lm: token embedding, causal mask, MLX's TransformerEncoder."""

    def __init__(self, vocab: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab, DIMS)
        self.encoder = nn.TransformerEncoder(2, DIMS, HEADS, 2 * DIMS, norm_first=True)
        self.out = nn.Linear(DIMS, vocab)

    def __call__(self, ids: mx.array) -> mx.array:
        x = self.embedding(ids)
        return self.out(self.encoder(x, _causal(ids.shape[1]).astype(x.dtype)))


class Bert(nn.Module):
    """BERT: word + position + type embeddings, post-norm encoder, padding mask from the ids."""

    def __init__(self, vocab: int = 32, length: int = 8):
        super().__init__()
        self.words = nn.Embedding(vocab, DIMS)
        self.positions = nn.Embedding(length, DIMS)
        self.types = nn.Embedding(2, DIMS)
        self.norm = nn.LayerNorm(DIMS)
        self.encoder = nn.TransformerEncoder(2, DIMS, HEADS, 2 * DIMS)
        self.pooler = nn.Linear(DIMS, DIMS)

    def __call__(self, ids: mx.array) -> tuple[mx.array, mx.array]:
        n = ids.shape[1]
        x = self.words(ids) + self.positions(mx.arange(n)) + self.types(mx.zeros_like(ids))
        mask = mx.where(ids > 0, 0.0, -1e9)[:, None, None, :]
        h = self.encoder(self.norm(x), mask)
        return h, mx.tanh(self.pooler(h[:, 0]))


class Llama(nn.Module):
    """Llama: RMSNorm, rotary positions, grouped-query attention, SwiGLU, causal mask."""

    def __init__(self, vocab: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab, DIMS)
        self.layers = [Block(norm=nn.RMSNorm, gated=True, kv_heads=1, rope=True) for _ in range(2)]
        self.norm = nn.RMSNorm(DIMS)
        self.out = nn.Linear(DIMS, vocab, bias=False)

    def __call__(self, ids: mx.array) -> mx.array:
        x = self.embedding(ids)
        mask = _causal(ids.shape[1])
        for layer in self.layers:
            x = layer(x, mask)
        return self.out(self.norm(x))


class T5Encoder(nn.Module):
    """T5's encoder: RMS-style norms and a relative position bias from log-spaced buckets."""

    def __init__(self, vocab: int = 32, buckets: int = 8, max_distance: int = 16):
        super().__init__()
        self.embedding = nn.Embedding(vocab, DIMS)
        self.bias = nn.Embedding(buckets, HEADS)
        self.layers = [Block(norm=nn.RMSNorm) for _ in range(2)]
        self.norm = nn.RMSNorm(DIMS)
        self.buckets, self.max_distance = buckets, max_distance

    def position_bias(self, n: int) -> mx.array:
        relative = mx.arange(n)[None, :] - mx.arange(n)[:, None]
        half = self.buckets // 2
        bucket = (relative > 0).astype(mx.int32) * half
        distance = mx.abs(relative)
        exact = half // 2
        far = exact + (
            mx.log(distance.astype(mx.float32) / exact + 1e-6)
            / math.log(self.max_distance / exact)
            * (half - exact)
        ).astype(mx.int32)
        bucket = bucket + mx.where(distance < exact, distance, mx.minimum(far, half - 1))
        return self.bias(bucket).transpose(2, 0, 1)[None]

    def __call__(self, ids: mx.array) -> mx.array:
        x = self.embedding(ids)
        bias = self.position_bias(ids.shape[1])
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x)


class ClipVision(nn.Module):
    """CLIP's vision tower: patch conv, class token, positions, pre-norm blocks, pooling."""

    def __init__(self, patch: int = 4, image: int = 8):
        super().__init__()
        self.patch = nn.Conv2d(3, DIMS, patch, stride=patch, bias=False)
        self.cls = mx.zeros((1, 1, DIMS)) + 0.1
        self.positions = nn.Embedding((image // patch) ** 2 + 1, DIMS)
        self.pre = nn.LayerNorm(DIMS)
        self.layers = [Block() for _ in range(2)]
        self.post = nn.LayerNorm(DIMS)
        self.projection = nn.Linear(DIMS, 8, bias=False)

    def __call__(self, pixels: mx.array) -> mx.array:
        x = self.patch(pixels)
        b = x.shape[0]
        x = x.reshape(b, -1, DIMS)
        x = mx.concatenate([mx.broadcast_to(self.cls, (b, 1, DIMS)), x], axis=1)
        x = self.pre(x + self.positions.weight)
        for layer in self.layers:
            x = layer(x)
        return self.projection(self.post(x[:, 0]))


class ClipText(nn.Module):
    """CLIP's text tower: causal encoder, pooled at the end-of-text token (the largest id)."""

    def __init__(self, vocab: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab, DIMS)
        self.layers = [Block() for _ in range(2)]
        self.norm = nn.LayerNorm(DIMS)

    def __call__(self, ids: mx.array) -> mx.array:
        x = self.embedding(ids)
        mask = _causal(ids.shape[1])
        for layer in self.layers:
            x = layer(x, mask)
        x = self.norm(x)
        return x[mx.arange(x.shape[0]), mx.argmax(ids, axis=-1)]


def _sinusoids(length: int, channels: int) -> mx.array:
    scales = mx.exp(-math.log(10000) / (channels // 2 - 1) * mx.arange(channels // 2))
    angles = mx.arange(length)[:, None] * scales[None, :]
    return mx.concatenate([mx.sin(angles), mx.cos(angles)], axis=1)


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder: two 1-D convs (the second strided), GELU, sinusoids, blocks."""

    def __init__(self, mels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv1d(mels, DIMS, 3, padding=1)
        self.conv2 = nn.Conv1d(DIMS, DIMS, 3, stride=2, padding=1)
        self.layers = [Block() for _ in range(2)]
        self.norm = nn.LayerNorm(DIMS)

    def __call__(self, mel: mx.array) -> mx.array:
        x = nn.gelu(self.conv2(nn.gelu(self.conv1(mel))))
        x = x + _sinusoids(x.shape[1], DIMS)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class WhisperDecoder(nn.Module):
    """Whisper's text decoder: causal self-attention and cross-attention to the audio."""

    def __init__(self, vocab: int = 32, length: int = 8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, DIMS)
        self.positions = nn.Embedding(length, DIMS)
        self.layers = [Block(cross=True) for _ in range(2)]
        self.norm = nn.LayerNorm(DIMS)

    def __call__(self, ids: mx.array, audio: mx.array) -> mx.array:
        x = self.embedding(ids) + self.positions.weight[: ids.shape[1]]
        mask = _causal(ids.shape[1])
        for layer in self.layers:
            x = layer(x, mask, audio)
        return self.norm(x) @ self.embedding.weight.T


class ResnetBlock(nn.Module):
    """Stable Diffusion's residual block: GroupNorm, SiLU, conv, with an optional time shift."""

    def __init__(self, channels: int, time_dims: int = 0):
        super().__init__()
        self.norm1 = nn.GroupNorm(4, channels, pytorch_compatible=True)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time = nn.Linear(time_dims, channels) if time_dims else None
        self.norm2 = nn.GroupNorm(4, channels, pytorch_compatible=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def __call__(self, x: mx.array, time: mx.array | None = None) -> mx.array:
        h = self.conv1(nn.silu(self.norm1(x)))
        if self.time is not None and time is not None:
            h = h + self.time(nn.silu(time))[:, None, None, :]
        return x + self.conv2(nn.silu(self.norm2(h)))


class SpatialAttention(nn.Module):
    """Attention over the pixels of a feature map (the VAE's mid block, the UNet's
    transformer with cross-attention to the text context)."""

    def __init__(self, channels: int, cross: bool = False):
        super().__init__()
        self.norm = nn.GroupNorm(4, channels, pytorch_compatible=True)
        self.block = Block(channels, cross=cross)

    def __call__(self, x: mx.array, context: mx.array | None = None) -> mx.array:
        b, h, w, c = x.shape
        tokens = self.norm(x).reshape(b, h * w, c)
        return x + self.block(tokens, context=context).reshape(b, h, w, c)


class VaeDecoder(nn.Module):
    """Stable Diffusion's VAE decoder: conv in, mid block with attention, nearest upsampling."""

    def __init__(self, latent: int = 4, channels: int = 8):
        super().__init__()
        self.conv_in = nn.Conv2d(latent, channels, 3, padding=1)
        self.mid = ResnetBlock(channels)
        self.attention = SpatialAttention(channels)
        self.up = nn.Upsample(2, mode="nearest")
        self.up_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels, pytorch_compatible=True)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)

    def __call__(self, z: mx.array) -> mx.array:
        x = self.attention(self.mid(self.conv_in(z)))
        x = self.up_conv(self.up(x))
        return self.conv_out(nn.silu(self.norm(x)))


class UNet(nn.Module):
    """Stable Diffusion's UNet in miniature: timestep embedding, a down and an up level with a
    skip connection, and a transformer with cross-attention to the text context."""

    def __init__(self, latent: int = 4, channels: int = 16):
        super().__init__()
        self.time = nn.Linear(channels, channels)
        self.conv_in = nn.Conv2d(latent, channels, 3, padding=1)
        self.down_block = ResnetBlock(channels, channels)
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.mid = SpatialAttention(channels, cross=True)
        self.up = nn.Upsample(2, mode="nearest")
        self.merge = nn.Conv2d(2 * channels, channels, 1)
        self.up_block = ResnetBlock(channels, channels)
        self.conv_out = nn.Conv2d(channels, latent, 3, padding=1)
        self.channels = channels

    def __call__(self, x: mx.array, timestep: mx.array, context: mx.array) -> mx.array:
        half = self.channels // 2
        frequencies = mx.exp(-math.log(10000) * mx.arange(half) / half)
        angles = timestep[:, None] * frequencies[None]
        time = self.time(mx.concatenate([mx.cos(angles), mx.sin(angles)], axis=-1))
        skip = self.down_block(self.conv_in(x), time)
        h = self.mid(self.down(skip), context)
        h = self.merge(mx.concatenate([self.up(h), skip], axis=-1))
        return self.conv_out(self.up_block(h, time))


class KeywordSpotting(nn.Module):
    """The keyword-spotting transformer (KWT): time frames as tokens, class token, post-norm."""

    def __init__(self, mels: int = 8, frames: int = 10, classes: int = 5):
        super().__init__()
        self.embed = nn.Linear(mels, DIMS)
        self.cls = mx.zeros((1, 1, DIMS)) - 0.1
        self.positions = mx.array(np.linspace(-0.5, 0.5, (frames + 1) * DIMS, dtype=np.float32))
        self.encoder = nn.TransformerEncoder(2, DIMS, HEADS, 2 * DIMS)
        self.head = nn.Linear(DIMS, classes)

    def __call__(self, mel: mx.array) -> mx.array:
        x = self.embed(mel)
        b, n, _ = x.shape
        x = mx.concatenate([mx.broadcast_to(self.cls, (b, 1, DIMS)), x], axis=1)
        x = x + self.positions.reshape(n + 1, DIMS)
        return self.head(self.encoder(x, None)[:, 0])


class LayerNorm2d(nn.Module):
    """SAM's and ConvNeXt's LayerNorm over the channels of a feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def __call__(self, x: mx.array) -> mx.array:
        return self.norm(x)


class ViTDet(nn.Module):
    """SAM / ViTDet image encoder: patches, windowed attention (rank-6 window partition), and
    a conv neck with LayerNorm2d."""

    def __init__(self, window: int = 2):
        super().__init__()
        self.patch = nn.Conv2d(3, DIMS, 2, stride=2)
        self.block = Block()
        self.neck = nn.Sequential(
            nn.Conv2d(DIMS, 8, 1, bias=False),
            LayerNorm2d(8),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            LayerNorm2d(8),
        )
        self.window = window

    def __call__(self, image: mx.array) -> mx.array:
        x = self.patch(image)
        b, h, w, c = x.shape
        s = self.window
        windows = x.reshape(b, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
        windows = self.block(windows.reshape(-1, s * s, c))
        x = windows.reshape(b, h // s, w // s, s, s, c).transpose(0, 1, 3, 2, 4, 5)
        return self.neck(x.reshape(b, h, w, c))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise 7x7 conv, LayerNorm over channels, MLP, layer scale."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.up = nn.Linear(channels, 4 * channels)
        self.down = nn.Linear(4 * channels, channels)
        self.scale = mx.full((channels,), 0.5)

    def __call__(self, x: mx.array) -> mx.array:
        return x + self.scale * self.down(nn.gelu(self.up(self.norm(self.depthwise(x)))))


class MixtureOfExperts(nn.Module):
    """Mixtral-style routing: top-2 experts per token by router score, softmax over the chosen
    scores, experts' outputs gathered with take_along_axis."""

    def __init__(self, experts: int = 4, chosen: int = 2):
        super().__init__()
        self.router = nn.Linear(DIMS, experts, bias=False)
        self.experts = [nn.Linear(DIMS, DIMS) for _ in range(experts)]
        self.chosen = chosen

    def __call__(self, x: mx.array) -> mx.array:
        scores = self.router(x)
        top = mx.argsort(-scores, axis=-1)[..., : self.chosen]
        weights = mx.softmax(mx.take_along_axis(scores, top, axis=-1), axis=-1)
        outputs = mx.stack([expert(x) for expert in self.experts], axis=-2)
        picked = mx.take_along_axis(outputs, top[..., None], axis=-2)
        return (picked * weights[..., None]).sum(axis=-2)


def _reflect_pad(x: mx.array, left: int, right: int) -> mx.array:
    # Encodec pads 1-D signals by reflection with slices; width 0 slices to nothing.
    n = x.shape[1]
    before = x[:, 1 : left + 1][:, ::-1]
    after = x[:, n - right - 1 : n - 1][:, ::-1]
    return mx.concatenate([before, x, after], axis=1)


class EncodecEncoder(nn.Module):
    """Encodec's convolutional encoder: reflect-padded 1-D convs (one with zero padding on one
    side), ELU, a strided downsampling conv."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv_in = nn.Conv1d(1, channels, 7)
        self.residual = nn.Conv1d(channels, channels, 3)
        self.down = nn.Conv1d(channels, 2 * channels, 4, stride=2)

    def __call__(self, audio: mx.array) -> mx.array:
        x = self.conv_in(_reflect_pad(audio, 6, 0))
        x = x + self.residual(nn.elu(_reflect_pad(x, 1, 1)))
        return self.down(nn.elu(_reflect_pad(x, 2, 0)))


FAMILIES: dict[str, tuple[Callable[[], nn.Module], Callable[[], list[mx.array]]]] = {
    "mlp": (
        lambda: nn.Sequential(nn.Linear(12, DIMS), nn.ReLU(), nn.Linear(DIMS, 4)),
        lambda: [_normal((2, 12), 0)],
    ),
    "transformer_lm": (TransformerLM, lambda: [_ids((2, 8), 32, 1)]),
    "bert_padding_mask": (Bert, lambda: [_ids((2, 8), 32, 2, pad_tail=3)]),
    "llama_gqa_rope": (Llama, lambda: [_ids((2, 8), 32, 3)]),
    "t5_encoder": (T5Encoder, lambda: [_ids((2, 8), 32, 4)]),
    "clip_vision": (ClipVision, lambda: [_normal((2, 8, 8, 3), 5)]),
    "clip_text": (ClipText, lambda: [_ids((2, 8), 32, 6)]),
    "whisper_encoder": (WhisperEncoder, lambda: [_normal((2, 12, 8), 7)]),
    "whisper_decoder": (
        WhisperDecoder,
        lambda: [_ids((2, 6), 32, 8), _normal((2, 6, DIMS), 9)],
    ),
    "sd_vae_decoder": (VaeDecoder, lambda: [_normal((1, 4, 4, 4), 10)]),
    "sd_unet_cross_attention": (
        UNet,
        lambda: [_normal((1, 8, 8, 4), 11), mx.array([3.0]), _normal((1, 5, DIMS), 12)],
    ),
    "keyword_spotting": (KeywordSpotting, lambda: [_normal((2, 10, 8), 13)]),
    "sam_vitdet_windows": (ViTDet, lambda: [_normal((1, 8, 8, 3), 14)]),
    "convnext_block": (ConvNeXtBlock, lambda: [_normal((1, 8, 8, 8), 15)]),
    "moe_routing": (MixtureOfExperts, lambda: [_normal((2, 5, DIMS), 16)]),
    "encodec_reflect_pad": (EncodecEncoder, lambda: [_normal((1, 32, 1), 17)]),
}
