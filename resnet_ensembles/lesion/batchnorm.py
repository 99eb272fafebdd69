"""BatchNorm statistics for a lesioned network (the paper evaluates with the stored ones; `recalibrated_stats`
re-estimates them for each deletion or reordering on a few training batches, as `sweep.evaluate(bn=
"recalibrate")` does). Both functions trace: a whole stack of lesions recalibrates inside one program.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.models.layout import Layout

BN_MOMENTUM = 0.9          # models.py BatchNorm: new = 0.9 * old + 0.1 * batch


def permute_blocks(tree: dict, order: Any, layout: Layout) -> dict:
  """tree["block_pos"] <- tree["block_{order[pos]}"] (params or statistics; `order` may be traced)."""
  out = dict(tree)
  for s in range(layout.num_stages):
    members = [i for i in layout.stage_blocks(s) if i not in layout.stage_openers]
    if not members:
      continue
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[tree[f"block_{i:02d}"] for i in members])
    for pos in members:
      out[f"block_{pos:02d}"] = jax.tree.map(lambda a, pos=pos: a[order[pos] - members[0]], stacked)
  return out


def recalibrated_stats(model, variables: dict, mask: Any, order: Any, images: Any) -> dict:
  """BatchNorm statistics of one lesioned network: the average over `images` [K, B, 32, 32, 3] (uint8)
  of each batch's statistics in training mode; blocks with mask 0 keep their stored statistics."""
  lay, params, stored = model.layout, variables["params"], variables["batch_stats"]
  if order is not None:  # train-mode BN cannot take block_order: move the blocks' variables instead
    params, stored = permute_blocks(params, order, lay), permute_blocks(stored, order, lay)
  zeros = jax.tree.map(jnp.zeros_like, stored)

  def add_batch(total, x):  # with zero running stats, the update returns 0.1 * batch statistics
    _, new = model.apply({"params": params, "batch_stats": zeros}, data_lib.normalize_for(model, x),
                         train=True, block_mask=mask, mutable=["batch_stats"])
    return jax.tree.map(jnp.add, total, new["batch_stats"]), None

  total, _ = jax.lax.scan(add_batch, zeros, images)
  avg = jax.tree.map(lambda t: t / (images.shape[0] * (1 - BN_MOMENTUM)), total)
  stats = avg if mask is None else models.keep_stats_of_inactive_blocks(stored, avg, mask)
  return stats if order is None else permute_blocks(stats, jnp.argsort(order), lay)
