"""Helpers over a residual stack's variables, alike for every family (blocks are named block_00, block_01, ...)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resnet_ensembles.models.layout import Layout

Array = Any


def num_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def block_names(layout: Layout) -> list[str]:
  return [f"block_{i:02d}" for i in range(layout.num_blocks)]


def keep_stats_of_inactive_blocks(old_stats, new_stats, active: Array):
  """BatchNorm statistics of a block that did not run (mask 0) stay as they were."""
  out = dict(new_stats)
  for i, name in enumerate(sorted(k for k in new_stats if k.startswith("block_"))):
    out[name] = jax.tree.map(lambda o, n: jnp.where(active[i] > 0, n, o), old_stats[name], new_stats[name])
  return out
