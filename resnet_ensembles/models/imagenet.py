"""ImageNet bottleneck ResNets (He et al. 2016a "original", 2016b "preact"; ResNet-50/101/152/200, and
ResNet-26, two blocks a stage: the smallest with a movable block per stage, for tests and smoke runs).

Veit et al. lesion an ImageNet ResNet-200 as well as the CIFAR nets. Rather than a second forward pass,
`ImageNetResNet` subclasses `models.CifarResNet` and replaces only what differs (layout, stem, bottleneck
branch, projection shortcut), so block masks, within-stage orders, gradient routes and path groups
are the inherited `__call__`/`block`/`branch` logic, and lesion/path engines run it unchanged.

Stage openers (blocks 1, 4, 28, 64 of ResNet-200, 1-based) have a projection shortcut: a 1x1 conv + BN
(stride 2 where downsampling, as in fb.resnet.torch shortcut type B) in its own `proj_XX` submodule next
to `block_XX`. Deleting an opener (mask 0) therefore leaves `post(proj(x))`; openers never move under
`block_order`, so neither do projections. In both variants the projection reads the raw block input
(not a pre-activation shared with the branch), so a deleted block's output does not depend on its branch.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from resnet_ensembles.models.layout import Layout
from resnet_ensembles.models.cifar import Array, CifarResNet, _conv_init

STAGE_BLOCKS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
EXPANSION = 4
VARIANTS = ("preact", "original")


def _check(depth: Any, variant: str = "preact") -> None:
  if depth not in STAGE_BLOCKS or isinstance(depth, bool):
    raise ValueError(f"ImageNet ResNet depth must be one of {', '.join(map(str, STAGE_BLOCKS))}, got {depth!r}")
  if variant not in VARIANTS:
    raise ValueError(f"variant must be 'preact' or 'original', got {variant!r}")


def _half(size: int) -> int:
  return -(-size // 2)


@functools.lru_cache(maxsize=None)
def imagenet_layout(depth: int, width: int = 64, image_size: int = 224) -> Layout:
  """Blocks of a bottleneck ResNet; block_macs are the branch multiply-adds for one image."""
  _check(depth)
  counts = STAGE_BLOCKS[depth]
  stage_of_block = tuple(s for s, c in enumerate(counts) for _ in range(c))
  openers = tuple(sum(counts[:s]) for s in range(len(counts)))
  n = len(stage_of_block)
  features = tuple(EXPANSION * width * 2 ** s for s in stage_of_block)
  strides = tuple(2 if (i in openers and i > 0) else 1 for i in range(n))
  macs, size = [], _half(_half(image_size))  # stride-2 stem conv, stride-2 max pool
  for i in range(n):
    size_out = _half(size) if strides[i] == 2 else size
    c_in, mid = (features[i - 1] if i > 0 else width), features[i] // EXPANSION
    macs.append(size * size * c_in * mid + size_out * size_out * mid * (9 * mid + features[i]))
    size = size_out
  return Layout(depth, n, stage_of_block, openers, openers[1:], features, strides, tuple(macs))


def imagenet_forward_macs(depth: int, width: int = 64, num_classes: int = 1000, image_size: int = 224) -> int:
  """Multiply-adds of one forward pass (convolutions, projections, classifier); ResNet-50: ~4.1e9."""
  lay = imagenet_layout(depth, width, image_size)
  size = _half(image_size)
  total = size * size * 49 * 3 * width + sum(lay.block_macs) + lay.block_features[-1] * num_classes
  size = _half(size)
  for i in range(lay.num_blocks):
    size = _half(size) if lay.block_strides[i] == 2 else size
    if i in lay.stage_openers:
      total += size * size * (lay.block_features[i - 1] if i else width) * lay.block_features[i]
  return total


def _bn(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)


class Bottleneck(nn.Module):
  """f_i: 1x1 (features/4), 3x3 (stride here, as torchvision v1.5), 1x1 (features);
  BN-ReLU before each conv ("preact") or BN after each conv, ReLU between ("original")."""
  features: int
  stride: int
  variant: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    mid = self.features // EXPANSION
    specs = ((mid, 1, 1), (mid, 3, self.stride), (self.features, 1, 1))
    for j, (f, k, s) in enumerate(specs, start=1):
      conv = nn.Conv(f, (k, k), (s, s), padding=k // 2, use_bias=False, kernel_init=_conv_init,
                     dtype=self.dtype, name=f"conv{j}")
      bn = _bn(train, self.dtype, f"bn{j}")
      if self.variant == "preact":
        x = conv(nn.relu(bn(x)))
      else:
        x = bn(conv(x))
        x = nn.relu(x) if j < len(specs) else x
    return x


class Projection(nn.Module):
  """Projection shortcut of a stage opener: 1x1 conv (strided where downsampling) + BN."""
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = nn.Conv(self.features, (1, 1), (self.stride, self.stride), padding="VALID", use_bias=False,
                kernel_init=_conv_init, dtype=self.dtype, name="conv")(x)
    return _bn(train, self.dtype, "bn")(x)


class ImageNetResNet(CifarResNet):
  """Bottleneck ResNet-{50,101,152,200} for 224x224 ImageNet (any size >= 32 runs).

  Stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool (both variants, as fb.resnet.torch). Readout is the
  inherited one (final BN-ReLU for preact, global average pool, classifier); `width` is the stem width
  and the first stage's bottleneck width (64 as published; smaller for cheap tests)."""
  depth: int
  variant: str = "preact"
  num_classes: int = 1000
  width: int = 64
  dtype: Any = jnp.float32
  input_stats: str = "imagenet"
  input_stride: ClassVar[int] = 4  # stride-2 stem convolution, stride-2 max pool

  def __post_init__(self):
    _check(self.depth, self.variant)  # one-line error at construction, before anything traces
    if not self.residual:
      raise ValueError("ImageNetResNet is a residual network (residual=False is not supported)")
    super().__post_init__()

  @property
  def layout(self) -> Layout:
    return imagenet_layout(self.depth, self.width)

  def setup(self):
    layout = self.layout
    bn = lambda: nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    self.stem_conv = nn.Conv(self.width, (7, 7), (2, 2), padding=3, use_bias=False, kernel_init=_conv_init,
                             dtype=self.dtype)
    self.stem_bn = bn()
    for i in range(layout.num_blocks):
      feats, stride = layout.block_features[i], layout.block_strides[i]
      setattr(self, f"block_{i:02d}", Bottleneck(feats, stride, self.variant, self.dtype))
      if i in layout.stage_openers:
        setattr(self, f"proj_{i:02d}", Projection(feats, stride, self.dtype))
    if self.variant == "preact":
      self.head_bn = bn()
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def embed(self, x: Array, train: bool = False) -> Array:
    """Stem: the activation entering block 0 (1/4 of the input resolution)."""
    x = nn.relu(self.stem_bn(self.stem_conv(x.astype(self.dtype)), use_running_average=not train))
    return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))

  def shortcut(self, x: Array, pos: int, train: bool = False) -> Array:
    """Identity, or the stage opener's projection (BatchNorm in training mode when `train`)."""
    if pos in self.layout.stage_openers:
      return getattr(self, f"proj_{pos:02d}")(x, train)
    return x


def build_imagenet_model(depth: int, variant: str = "preact", num_classes: int = 1000, width: int = 64,
                         dtype: Any = jnp.float32) -> ImageNetResNet:
  return ImageNetResNet(depth=depth, variant=variant, num_classes=num_classes, width=width, dtype=dtype)


def build_from_config(config) -> ImageNetResNet:
  """The model of an `experiments/configs/imagenet.py` config (model.name "imagenet_resnet")."""
  m = config.model
  if m.name != "imagenet_resnet":
    raise ValueError(f"config.model.name must be 'imagenet_resnet', got {m.name!r}")
  return build_imagenet_model(m.depth, m.variant, m.num_classes, m.width, jnp.dtype(m.dtype))
