"""A small pre-LN Vision Transformer for CIFAR-10 behind the engines' `ResidualStack` interface.

Each layer l adds two residual branches to the token stream: position 2l is its attention sublayer
(LayerNorm -> multi-head self-attention) and 2l+1 its MLP sublayer (LayerNorm -> Dense -> GELU -> Dense),
so n = 2 x depth blocks, named block_00 ... like the ResNets' branches. `block_mask` [2L] deletes
sublayers and `grad_route` gates them one by one; `block_order` [2L] moves whole LAYERS: positions 2l,
2l+1 hold blocks 2m, 2m+1 (layer m's pair), the layout's `order_unit` = 2 (`layer_order_to_block_order`).
There is one stage and no opener: any layer may be deleted or moved (Sun et al. 2024 ask exactly that).
`parallel_from` [L] (Sun et al.'s parallel layers, `residual.layered`): layer l reads the stream as it entered
layer parallel_from[l] <= l and adds its change to the current stream; arange(L) is the ordinary network.
No BatchNorm: nothing to recalibrate after a lesion; variables hold only "params".
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.models.layout import Layout
from resnet_ensembles.models.residual import (Array, check_block_inputs, layered, residual_add, shift_cotangent,
                                              stacked_branch)

_dense_init = nn.initializers.xavier_uniform()


@functools.lru_cache(maxsize=None)
def vit_layout(depth: int, width: int, mlp_dim: int, tokens: int) -> Layout:
  """2 x depth blocks in one stage, moved in (attention, MLP) pairs; block_macs per image."""
  if not isinstance(depth, (int, np.integer)) or depth < 1:
    raise ValueError(f"ViT depth (number of layers) must be a positive integer, got {depth!r}")
  n = 2 * depth
  attn = 4 * tokens * width * width + 2 * tokens * tokens * width  # q, k, v, out; scores and weighted sum
  mlp = 2 * tokens * width * mlp_dim
  return Layout(depth, n, (0,) * n, (), (), (width,) * n, (1,) * n, (attn, mlp) * depth, order_unit=2)


def layer_order_to_block_order(layer_order: Any) -> np.ndarray:
  """An order over layers [L] as the block_order [2L] a ViT takes: layer m's attention and MLP together."""
  layer_order = np.asarray(layer_order, np.int32)
  return np.stack([2 * layer_order, 2 * layer_order + 1], axis=-1).reshape(layer_order.shape[:-1] + (-1,))


class AttentionBranch(nn.Module):
  """f at an even position: LayerNorm, then multi-head self-attention over the tokens."""
  heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="ln")(x)
    return nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, kernel_init=_dense_init,
                                           deterministic=True, name="attn")(y)


class MlpBranch(nn.Module):
  """f at an odd position: LayerNorm, Dense(mlp_dim), GELU, Dense(width)."""
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="ln")(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_dense_init, name="fc1")(y))
    return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_dense_init, name="fc2")(y)


class VisionTransformer(nn.Module):
  """ViT for 32x32 images: patch x patch patch embedding, learned positions, `depth` pre-LN layers,
  final LayerNorm, mean over tokens (no class token: every token is alike, so the stream is one array),
  linear head."""
  depth: int
  width: int = 192
  heads: int = 3
  mlp_dim: int = 384
  patch: int = 4
  num_classes: int = 10
  dtype: Any = jnp.float32
  image_size: int = 32
  input_stats: str = "cifar10"
  residual: ClassVar[bool] = True
  batch_norm: ClassVar[bool] = False

  def __post_init__(self):
    if self.image_size % self.patch or self.width % self.heads:
      raise ValueError(f"ViT needs patch | image_size and heads | width, got patch {self.patch}, image_size "
                       f"{self.image_size}, heads {self.heads}, width {self.width}")
    vit_layout(self.depth, self.width, self.mlp_dim, self.tokens)
    super().__post_init__()

  @property
  def tokens(self) -> int:
    return (self.image_size // self.patch) ** 2

  @property
  def layout(self) -> Layout:
    return vit_layout(self.depth, self.width, self.mlp_dim, self.tokens)

  def stream_shape(self, image_hw: tuple[int, int]) -> tuple[int, ...]:
    return ((image_hw[0] // self.patch) * (image_hw[1] // self.patch), self.width)

  def setup(self):
    self.patch_embed = nn.Conv(self.width, (self.patch, self.patch), (self.patch, self.patch), padding="VALID",
                               dtype=self.dtype)
    self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.02), (1, self.tokens, self.width))
    for i in range(self.layout.num_blocks):
      branch = AttentionBranch(self.heads, self.dtype) if i % 2 == 0 else MlpBranch(self.mlp_dim, self.dtype)
      setattr(self, f"block_{i:02d}", branch)
    self.final_ln = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def __call__(self, x: Array, train: bool = False, block_mask: Optional[Array] = None,
               block_order: Optional[Array] = None, grad_route: Optional[Array] = None,
               path_groups: int = 0, parallel_from: Optional[Array] = None) -> Array:
    n = self.layout.num_blocks
    check_block_inputs(f"a {self.depth}-layer ViT (2 blocks a layer)", self.layout, x.shape[0], train, block_mask,
                       block_order, grad_route)
    x = self.embed(x, train)
    block = lambda h, pos: self.block(h, pos, train, mask=None if block_mask is None else block_mask[..., pos],
                                      route=None if grad_route is None else grad_route[..., pos],
                                      order=block_order, path_groups=path_groups)
    return self.readout(layered(block, x, self.depth, parallel_from), train)

  def embed(self, x: Array, train: bool = False) -> Array:
    """Patches -> tokens [B, T, width] plus learned positions."""
    del train
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} images, got {x.shape[1:3]}")
    x = self.patch_embed(x.astype(self.dtype))
    return x.reshape(x.shape[0], -1, self.width) + self.pos_embed.astype(self.dtype)

  def readout(self, x: Array, train: bool = False) -> Array:
    del train
    return self.head(jnp.mean(self.final_ln(x), axis=1)).astype(jnp.float32)

  def branch(self, x: Array, pos: int, train: bool = False, order: Optional[Array] = None) -> Array:
    """Sublayer f at `pos`: block `order[pos]`'s parameters (same kind, a traced index) when ordered."""
    del train
    if order is None or self.is_initializing():
      return getattr(self, f"block_{pos:02d}")(x)
    return stacked_branch(self, x, pos, order, self.layout.num_blocks)

  def block(self, x: Array, pos: int, train: bool = False, mask: Optional[Array] = None,
            route: Optional[Array] = None, order: Optional[Array] = None, path_groups: int = 0) -> Array:
    """x + m * f_pos(x); mask scalar or [B], route scalar or [2] (as `CifarResNet.block`)."""
    branch = self.branch(x, pos, train, order)
    if path_groups:
      branch = shift_cotangent(branch, path_groups)
    return residual_add(x, branch, mask, route, self.dtype)

  def deleted(self, x: Array, pos: int) -> Array:
    del pos
    return x


def build_from_config(config) -> VisionTransformer:
  """The model of an `experiments/configs/vit.py` config (model.name "vit")."""
  m = config.model
  return VisionTransformer(depth=m.depth, width=m.width, heads=m.heads, mlp_dim=m.mlp_dim, patch=m.patch,
                           num_classes=m.num_classes, dtype=jnp.dtype(m.dtype))
