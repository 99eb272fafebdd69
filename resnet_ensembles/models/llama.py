"""A Llama-architecture language model (llama2.c's) behind the engines' `ResidualStack` interface.

Token embedding -> L layers -> RMSNorm -> classifier (the embedding itself when shared). Layer l adds two
residual branches to the token stream, as in the ViT: position 2l is its attention sublayer (RMSNorm ->
grouped-query causal self-attention with rotary positions) and 2l+1 its MLP sublayer (RMSNorm -> SwiGLU), so
n = 2L blocks. `block_mask` [2L] deletes sublayers, `grad_route` gates them, `block_order` [2L] moves whole
layers (pairs, `order_unit` 2) and `parallel_from` [L] runs spans of layers in parallel (`residual.layered`).
`embed` takes token ids [B, T] or, for gradients with respect to the embedded tokens, an embedded stream
[B, T, dim]. `decode` is one position with a key/value cache (`models.llama_decode` samples with it).
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.models.layout import Layout
from resnet_ensembles.models.residual import (Array, check_block_inputs, layered, residual_add, shift_cotangent,
                                              stacked_branch)


@functools.lru_cache(maxsize=None)
def llama_layout(n_layers: int, dim: int, hidden_dim: int, kv_dim: int, tokens: int) -> Layout:
  """2 x n_layers blocks in one stage, moved in (attention, MLP) pairs; block_macs per sequence of `tokens`."""
  n = 2 * n_layers
  attn = tokens * dim * (2 * dim + 2 * kv_dim) + tokens * tokens * dim  # projections; causal scores and sum
  mlp = 3 * tokens * dim * hidden_dim
  return Layout(n_layers, n, (0,) * n, (), (), (dim,) * n, (1,) * n, (attn, mlp) * n_layers, order_unit=2)


def rotary(x: Array, positions: Array) -> Array:
  """Rotates adjacent pairs (2i, 2i+1) of each head [..., T, heads, head_size] by position * 10000^(-2i/size)."""
  size = x.shape[-1]
  freq = 10000.0 ** (-jnp.arange(0, size, 2, dtype=jnp.float32) / size)
  angle = positions.astype(jnp.float32)[..., :, None, None] * freq  # [..., T, 1, size/2]
  cos, sin = jnp.cos(angle).astype(x.dtype), jnp.sin(angle).astype(x.dtype)
  a, b = x[..., 0::2], x[..., 1::2]
  return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)


class Attention(nn.Module):
  """RMSNorm, then causal self-attention; query head h reads key/value head h // (heads / kv_heads)."""
  n_heads: int
  n_kv_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, positions: Array, cache: Optional[tuple] = None):
    dim = x.shape[-1]
    size, group = dim // self.n_heads, self.n_heads // self.n_kv_heads
    dense = lambda features, name: nn.Dense(features, use_bias=False, dtype=self.dtype, name=name)
    h = nn.RMSNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    q = dense(dim, "wq")(h).reshape(x.shape[:-1] + (self.n_kv_heads, group, size))
    k = dense(size * self.n_kv_heads, "wk")(h).reshape(x.shape[:-1] + (self.n_kv_heads, size))
    v = dense(size * self.n_kv_heads, "wv")(h).reshape(x.shape[:-1] + (self.n_kv_heads, size))
    q = rotary(q.reshape(x.shape[:-1] + (self.n_heads, size)), positions).reshape(q.shape)
    k = rotary(k, positions)
    if cache is None:  # the whole sequence: causal mask over [T, T]
      allowed = positions[..., :, None] >= positions[..., None, :]
    else:  # one new position per sequence: write it into the cache, attend to every position up to it
      k_cache, v_cache = cache
      at = positions[0]
      k = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), at, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), at, axis=1)
      cache = (k, v)
      allowed = jnp.arange(k.shape[1])[None, :] <= positions[:, None]
    scores = jnp.einsum("...tkgd,...skd->...kgts", q, k) / np.sqrt(size).astype(np.float32)
    scores = jnp.where(allowed[..., None, None, :, :] if cache is None else allowed[None, None], scores, -jnp.inf)
    out = jnp.einsum("...kgts,...skd->...tkgd", jax.nn.softmax(scores.astype(jnp.float32)).astype(self.dtype), v)
    out = dense(dim, "wo")(out.reshape(x.shape))
    return out if cache is None else (out, cache)


class SwiGLU(nn.Module):
  """RMSNorm, then w2(silu(w1 h) * w3 h)."""
  hidden_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dense = lambda features, name: nn.Dense(features, use_bias=False, dtype=self.dtype, name=name)
    h = nn.RMSNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    return dense(x.shape[-1], "w2")(nn.silu(dense(self.hidden_dim, "w1")(h)) * dense(self.hidden_dim, "w3")(h))


class Llama(nn.Module):
  """Any width, depth, head count, key/value head count, vocabulary and context a llama2.c header gives."""
  dim: int
  hidden_dim: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  vocab_size: int
  seq_len: int
  shared_classifier: bool = True
  dtype: Any = jnp.float32
  input_stats: str = "tokens"
  residual: ClassVar[bool] = True
  batch_norm: ClassVar[bool] = False

  def __post_init__(self):
    if self.dim % self.n_heads or self.n_heads % self.n_kv_heads or (self.dim // self.n_heads) % 2:
      raise ValueError(f"Llama needs heads | dim with an even head size and kv_heads | heads, got dim {self.dim}, "
                       f"{self.n_heads} heads, {self.n_kv_heads} kv heads")
    super().__post_init__()

  @property
  def num_classes(self) -> int:
    return self.vocab_size

  @property
  def depth(self) -> int:
    return self.n_layers

  @property
  def layout(self) -> Layout:
    return llama_layout(self.n_layers, self.dim, self.hidden_dim, self.dim * self.n_kv_heads // self.n_heads,
                        self.seq_len)

  def stream_shape(self, image_hw: tuple[int, ...] = ()) -> tuple[int, ...]:
    """One sequence's stream [tokens, dim] (`image_hw`: (tokens,) or empty for the full context)."""
    return (image_hw[0] if len(image_hw) else self.seq_len, self.dim)

  def setup(self):
    self.embed_tokens = nn.Embed(self.vocab_size, self.dim, dtype=self.dtype, name="embed")
    for i in range(2 * self.n_layers):
      branch = (Attention(self.n_heads, self.n_kv_heads, self.dtype) if i % 2 == 0
                else SwiGLU(self.hidden_dim, self.dtype))
      setattr(self, f"block_{i:02d}", branch)
    self.final_norm = nn.RMSNorm(epsilon=1e-5, dtype=self.dtype, name="norm")
    if not self.shared_classifier:
      self.output = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype, name="output")

  def check_tokens(self, tokens: Array) -> None:
    """One line for ids outside the vocabulary or a sequence longer than the context (concrete ids only)."""
    shape = jnp.shape(tokens)
    if len(shape) != 2 or shape[1] > self.seq_len:
      raise ValueError(f"tokens must be [batch, length <= {self.seq_len}] (the model's context), got {shape}")
    if not isinstance(tokens, jax.core.Tracer):
      t = np.asarray(tokens)
      if t.size and (t.min() < 0 or t.max() >= self.vocab_size):
        raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1} (the vocabulary), got "
                         f"{int(t.min())}..{int(t.max())}")

  def __call__(self, x: Array, train: bool = False, block_mask: Optional[Array] = None,
               block_order: Optional[Array] = None, grad_route: Optional[Array] = None,
               path_groups: int = 0, parallel_from: Optional[Array] = None) -> Array:
    """Next-token logits [B, T, vocab] of token ids [B, T] (or an embedded stream [B, T, dim])."""
    check_block_inputs(f"a {self.n_layers}-layer Llama (2 blocks a layer)", self.layout, x.shape[0], train,
                       block_mask, block_order, grad_route)
    h = self.embed(x, train)
    block = lambda h, pos: self.block(h, pos, train, mask=None if block_mask is None else block_mask[..., pos],
                                      route=None if grad_route is None else grad_route[..., pos],
                                      order=block_order, path_groups=path_groups)
    return self.readout(layered(block, h, self.n_layers, parallel_from), train)

  def embed(self, x: Array, train: bool = False) -> Array:
    del train
    if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
      if x.ndim != 3 or x.shape[-1] != self.dim or x.shape[1] > self.seq_len:
        raise ValueError(f"an embedded stream must be [batch, length <= {self.seq_len}, {self.dim}], got {x.shape}")
      return x.astype(self.dtype)
    self.check_tokens(x)
    return self.embed_tokens(x)

  def readout(self, h: Array, train: bool = False) -> Array:
    del train
    h = self.final_norm(h)
    logits = self.embed_tokens.attend(h) if self.shared_classifier else self.output(h)
    return logits.astype(jnp.float32)

  def branch(self, h: Array, pos: int, order: Optional[Array] = None) -> Array:
    positions = jnp.arange(h.shape[-2])
    if order is None or self.is_initializing():
      return getattr(self, f"block_{pos:02d}")(*((h, positions) if pos % 2 == 0 else (h,)))
    return stacked_branch(self, h, pos, order, self.layout.num_blocks,
                          (positions,) if pos % 2 == 0 else ())

  def block(self, x: Array, pos: int, train: bool = False, mask: Optional[Array] = None,
            route: Optional[Array] = None, order: Optional[Array] = None, path_groups: int = 0) -> Array:
    """x + m * f_pos(x); mask scalar or [B], route scalar or [2] (as the other families)."""
    del train
    branch = self.branch(x, pos, order)
    if path_groups:
      branch = shift_cotangent(branch, path_groups)
    return residual_add(x, branch, mask, route, self.dtype)

  def deleted(self, x: Array, pos: int) -> Array:
    del pos
    return x

  def decode(self, tokens: Array, position: Array, cache: tuple) -> tuple[Array, tuple]:
    """Logits [B, vocab] of one new token per sequence at `position` (a scalar), given and returning the
    key/value cache: a tuple over layers of (keys, values) [B, seq_len, kv_heads, head_size]."""
    h = self.embed_tokens(tokens[:, None])
    positions = jnp.full((1,), position, jnp.int32)
    new = []
    for layer in range(self.n_layers):
      out, kv = getattr(self, f"block_{2 * layer:02d}")(h, positions, cache[layer])
      h = h + out
      h = h + getattr(self, f"block_{2 * layer + 1:02d}")(h)
      new.append(kv)
    return self.readout(h)[:, 0], tuple(new)

  def empty_cache(self, batch: int) -> tuple:
    shape = (batch, self.seq_len, self.n_kv_heads, self.dim // self.n_heads)
    return tuple((jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)) for _ in range(self.n_layers))
