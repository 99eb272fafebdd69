"""Block layout of a residual stack: what a sweep needs without re-deriving it from a model."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
  """0-based block indices. Stages are the runs of equal `stage_of_block`: blocks move only within their
  stage. Stage openers (the first block of each ResNet stage: blocks 1, 19, 37 of ResNet-110 in the paper's
  1-based numbering; none in a transformer) never move and are left out of k-deletions by default; the
  downsampling blocks are openers of stages 2, 3. `order_unit` consecutive blocks (aligned on multiples of
  it) move together under `block_order`: 1 for ResNets, 2 for a transformer's (attention, MLP) layers.
  `block_features`/`block_strides` describe ResNet branches (a transformer: its width, stride 1)."""
  depth: int
  num_blocks: int
  stage_of_block: tuple[int, ...]
  stage_openers: tuple[int, ...]
  downsampling_blocks: tuple[int, ...]
  block_features: tuple[int, ...]
  block_strides: tuple[int, ...]
  block_macs: tuple[int, ...]   # multiply-adds of each residual branch for one 32x32 image
  order_unit: int = 1           # consecutive blocks that block_order moves as one

  @property
  def num_stages(self) -> int:
    return max(self.stage_of_block) + 1

  def stage_blocks(self, stage: int) -> range:
    members = [i for i, s in enumerate(self.stage_of_block) if s == stage]
    return range(members[0], members[-1] + 1)

  @property
  def deletable_blocks(self) -> tuple[int, ...]:
    """Blocks that are not stage openers (the k-deletion plots of the paper draw from these)."""
    return tuple(i for i in range(self.num_blocks) if i not in self.stage_openers)


def cifar_layout(depth: int, width: int = 16, image_size: int = 32) -> Layout:
  if not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
  n = (depth - 2) // 6
  stage_of_block = tuple(s for s in range(3) for _ in range(n))
  openers = (0, n, 2 * n)
  features = tuple(width * 2 ** s for s in stage_of_block)
  strides = tuple(2 if (i in openers and i > 0) else 1 for i in range(3 * n))
  macs, size = [], image_size
  for i in range(3 * n):
    size_out = size // strides[i]
    c_in = features[i - 1] if i > 0 else width
    macs.append(size_out * size_out * 9 * features[i] * (c_in + features[i]))
    size = size_out
  return Layout(depth, 3 * n, stage_of_block, openers, openers[1:], features, strides, tuple(macs))


def forward_macs(depth: int, width: int = 16, num_classes: int = 10) -> int:
  """Multiply-adds of one forward pass on a 32x32 image (convolutions and the classifier)."""
  layout = cifar_layout(depth, width)
  return 32 * 32 * 27 * width + sum(layout.block_macs) + 4 * width * num_classes


def check_block_order(order: Any, layout: Layout) -> None:
  """A clear error for an order that is not a within-stage permutation fixing the stage openers.

  Skipped for traced values (inside jit/vmap): generators and sweeps validate before tracing."""
  if isinstance(order, jax.core.Tracer):
    return
  order = np.asarray(order)
  if order.ndim != 1 or order.shape[0] != layout.num_blocks:
    raise ValueError(f"block_order must have shape ({layout.num_blocks},), got {order.shape}")
  if sorted(order.tolist()) != list(range(layout.num_blocks)):
    raise ValueError(f"block_order must be a permutation of 0..{layout.num_blocks - 1}")
  for pos, blk in enumerate(order.tolist()):
    if layout.stage_of_block[pos] != layout.stage_of_block[blk]:
      raise ValueError(f"block_order moves block {blk} (stage {layout.stage_of_block[blk]}) to position "
                       f"{pos} (stage {layout.stage_of_block[pos]}); orders must stay within stages")
    if pos in layout.stage_openers and blk != pos:
      raise ValueError(f"block_order must keep stage opener {pos} first in its stage, got block {blk}")
  u = layout.order_unit
  if u > 1 and any(order[p] != order[p - p % u] + p % u or order[p - p % u] % u for p in range(len(order))):
    raise ValueError(f"block_order must move whole units of {u} blocks (a layer's attention and MLP): positions "
                     f"{u}l..{u}l+{u - 1} must hold blocks {u}m..{u}m+{u - 1}, got {order.tolist()}")
