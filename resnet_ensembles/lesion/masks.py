"""Seeded generators of the lesions Veit et al. apply to a trained network (Figs. 3 and 5).

Every generator is a pure function of (layout, arguments, seed): a numpy Generator built from the seed
draws everything, so a sweep rerun from its JSON reproduces the same masks and orders. Validation
happens here, before any program is compiled.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
# (scipy.stats is imported in the functions that use it: importing it costs every process ~0.7 s)

from resnet_ensembles.models.layout import Layout

PAPER_MAX_K = 20  # Fig. 5a deletes 1..20 blocks of ResNet-110


def _candidates(layout: Layout, include_openers: bool) -> np.ndarray:
  return np.arange(layout.num_blocks) if include_openers else np.asarray(layout.deletable_blocks, np.int64)


def check_mask(mask: np.ndarray, layout: Layout) -> np.ndarray:
  """A stack [M, n] of 0/1 masks, or a clear ValueError."""
  mask = np.asarray(mask, np.float32)
  if mask.ndim == 1:
    mask = mask[None]
  if mask.ndim != 2 or mask.shape[1] != layout.num_blocks:
    raise ValueError(f"masks must have shape [M, {layout.num_blocks}] for depth {layout.depth}, got {mask.shape}")
  if not np.all((mask == 0) | (mask == 1)):
    raise ValueError("masks must hold only 0 (deleted) and 1 (kept)")
  return mask


def single_deletions(layout: Layout, include_openers: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(masks [m, n], deleted block [m]): each block deleted on its own (Fig. 3 deletes every block)."""
  blocks = _candidates(layout, include_openers)
  masks = np.ones((len(blocks), layout.num_blocks), np.float32)
  masks[np.arange(len(blocks)), blocks] = 0
  return masks, blocks


def unit_deletions(layout: Layout) -> tuple[np.ndarray, list[list[int]]]:
  """(masks [m, n], deleted blocks per row): each movable unit (`order_unit` blocks, e.g. a transformer
  layer's attention and MLP) deleted whole; stage openers' units excluded."""
  u = layout.order_unit
  units = [list(range(i, i + u)) for i in range(0, layout.num_blocks, u)
           if not set(range(i, i + u)) & set(layout.stage_openers)]
  masks = np.ones((len(units), layout.num_blocks), np.float32)
  for row, blocks in enumerate(units):
    masks[row, blocks] = 0
  return masks, units


def default_ks(layout: Layout, include_openers: bool = False) -> list[int]:
  """k = 1..20 as in the paper, capped by the number of blocks that may be deleted."""
  return list(range(1, min(PAPER_MAX_K, len(_candidates(layout, include_openers))) + 1))


def random_deletions(layout: Layout, num_samples: int, seed: int, ks: Optional[Sequence[int]] = None,
                     include_openers: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(masks [len(ks) * num_samples, n], k per row): `num_samples` random sets of k deleted blocks per k.

  Blocks are drawn without replacement from the non-opener blocks unless `include_openers`."""
  blocks = _candidates(layout, include_openers)
  ks = default_ks(layout, include_openers) if ks is None else [int(k) for k in ks]
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  for k in ks:
    if not 1 <= k <= len(blocks):
      raise ValueError(f"cannot delete k={k} blocks: depth {layout.depth} has {len(blocks)} deletable blocks "
                       f"({'stage openers included' if include_openers else 'stage openers excluded'})")
  rng = np.random.default_rng(seed)
  masks = np.ones((len(ks) * num_samples, layout.num_blocks), np.float32)
  row_k = np.repeat(np.asarray(ks, np.int64), num_samples)
  for row, k in enumerate(row_k):
    masks[row, rng.choice(blocks, size=k, replace=False)] = 0
  return masks, row_k


def kendall_tau(order: np.ndarray) -> float:
  """Kendall's tau between an order and the identity (1: unchanged)."""
  from scipy import stats
  order = np.asarray(order)
  return float(stats.kendalltau(np.arange(len(order)), order).statistic)


def random_reorderings(layout: Layout, num_samples: int, seed: int, swaps: Optional[Sequence[int]] = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(orders [len(swaps) * num_samples, n], swaps per row, Kendall tau per row).

  Each order applies k random swaps, each of two distinct non-opener blocks of one stage (the stage
  drawn with probability proportional to its number of movable pairs), so openers stay first. Where the
  layout moves blocks in units (`order_unit`, a transformer layer's attention and MLP), a swap exchanges
  two whole units, and Kendall's tau is taken over the units."""
  u = layout.order_unit
  movable = [np.asarray([i for i in layout.stage_blocks(s) if i not in layout.stage_openers and i % u == 0],
                        np.int64) for s in range(layout.num_stages)]
  pairs = np.asarray([len(m) * (len(m) - 1) // 2 for m in movable], np.float64)
  if pairs.sum() == 0:
    raise ValueError(f"depth {layout.depth} has no two non-opener blocks in one stage to swap")
  swaps = list(range(1, PAPER_MAX_K + 1)) if swaps is None else [int(k) for k in swaps]
  if num_samples < 1 or any(k < 0 for k in swaps):
    raise ValueError(f"num_samples must be >= 1 and swap counts >= 0, got {num_samples}, {swaps}")
  rng = np.random.default_rng(seed)
  rows = np.repeat(np.asarray(swaps, np.int64), num_samples)
  orders = np.tile(np.arange(layout.num_blocks), (len(rows), 1))
  for row, k in enumerate(rows):
    for _ in range(k):
      stage = rng.choice(layout.num_stages, p=pairs / pairs.sum())
      a, b = rng.choice(movable[stage], size=2, replace=False)
      orders[row, a:a + u], orders[row, b:b + u] = orders[row, b:b + u].copy(), orders[row, a:a + u].copy()
  taus = np.asarray([kendall_tau(o[::u] // u) for o in orders])  # over the units that move (layers)
  return orders, rows, taus
